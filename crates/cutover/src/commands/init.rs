use crate::cli::InitArgs;
use crate::error::{CommandError, Result};
use crate::printer::Printer;
use crate::settings::CONFIG_FILE;

pub fn init(args: &InitArgs, printer: Printer) -> Result<()> {
    let path = args.dir.join(CONFIG_FILE);
    if path.exists() && !args.force {
        return Err(CommandError::usage(
            format!("{} already exists", path.display()),
            "pass --force to overwrite it",
        ));
    }
    std::fs::write(&path, cutover_config::TEMPLATE)
        .map_err(|e| cutover_core::Error::io("write", &path, e))?;
    printer.result(&serde_json::json!({ "config": path }), || {
        format!(
            "Wrote {}. Set [deploy] path, then run `cutover deploy`.\n",
            path.display()
        )
    });
    Ok(())
}
