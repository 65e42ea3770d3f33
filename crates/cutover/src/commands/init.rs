use cutover_config::preset::{self, Preset};

use crate::cli::InitArgs;
use crate::error::{CommandError, Result};
use crate::printer::Printer;
use crate::settings::CONFIG_FILE;

/// Writes a cutover.toml for the app in DIR: the preset its files call for, or the one
/// asked for.
pub fn init(args: &InitArgs, printer: Printer) -> Result<()> {
    let path = args.dir.join(CONFIG_FILE);
    if path.exists() && !args.force {
        return Err(CommandError::usage(
            format!("{} already exists", path.display()),
            "pass --force to overwrite it",
        ));
    }
    let mut detection = preset::detect(&args.dir);
    let detected = detection.preset;
    if let Some(name) = &args.preset {
        // clap allows only the names `Preset` knows.
        detection.preset = Preset::from_name(name).unwrap_or(Preset::Generic);
        if detection.preset != detected {
            detection.why = format!("--preset {name}");
        }
    }
    let text = preset::render(&detection);
    // What the written file says is what a deploy reads: a preset that does not parse is a
    // bug, caught before anything is written.
    let config = cutover_config::parse(&text, &path)?;
    std::fs::write(&path, &text).map_err(|e| cutover_core::Error::io("write", &path, e))?;
    let shared_files = config.shared.files.clone();
    let json = serde_json::json!({
        "config": path,
        "preset": detection.preset,
        "why": detection.why,
        "shared_files": shared_files,
        "content": text,
    });
    printer.result(&json, || {
        let mut out = match detection.preset {
            Preset::Generic => format!("Wrote {} (generic: {}).\n", path.display(), detection.why),
            preset => format!(
                "Wrote {} for {} ({}).\n",
                path.display(),
                preset.name(),
                detection.why
            ),
        };
        out.push_str("Set [deploy] path (or pass --to), then run `cutover deploy`.\n");
        if !shared_files.is_empty() {
            let files: Vec<String> = shared_files.iter().map(|f| format!("shared/{f}")).collect();
            out.push_str(&format!(
                "Before the first deploy, create on each host, in the deploy path: {}\n",
                files.join(", ")
            ));
        }
        out
    });
    Ok(())
}
