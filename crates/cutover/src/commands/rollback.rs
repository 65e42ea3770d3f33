use crate::cli::{GlobalArgs, RollbackArgs};
use crate::error::Result;
use crate::printer::Printer;
use crate::settings;

pub fn rollback(args: &RollbackArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    // Without an id, the target is chosen under each host's lock, so a deploy finishing
    // meanwhile cannot change what "previous" is.
    let release = args
        .release
        .as_deref()
        .map(settings::release_id)
        .transpose()?;
    super::switch::activate(&args.target, &args.change, release, true, global, printer)
}
