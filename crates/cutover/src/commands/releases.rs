use cutover_core::history::{self, EventKind};

use crate::cli::{GlobalArgs, TargetArgs};
use crate::error::Result;
use crate::printer::Printer;
use crate::settings;

#[derive(serde::Serialize)]
struct ReleaseRow {
    id: String,
    current: bool,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    staged_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    git_commit: Option<String>,
}

pub fn releases(target: &TargetArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    if settings::on_hosts(target, &config)? {
        return crate::fleet::run_on_hosts(&config, target, &["releases"], |_| Vec::new(), printer);
    }
    let deploy = settings::existing_deploy_path(target, &config)?;
    let link = deploy.current_link()?;
    let current = link.as_ref().and_then(|l| l.release.clone());
    let events = history::read(&deploy.history_file())?;
    let rows: Vec<ReleaseRow> = deploy
        .releases()?
        .into_iter()
        .map(|id| {
            let staged = events
                .iter()
                .rev()
                .find(|e| e.event == EventKind::Staged && e.release == id);
            ReleaseRow {
                current: current.as_ref() == Some(&id),
                path: deploy.release(&id).display().to_string(),
                staged_at: staged.map(|e| e.time.clone()),
                user: staged.map(|e| e.user.clone()),
                git_commit: staged.and_then(|e| e.source.as_ref()?.git_commit.clone()),
                id: id.to_string(),
            }
        })
        .collect();
    let json = serde_json::json!({
        "deploy_path": deploy.root(),
        "flavor": deploy.flavor(),
        "current": current,
        "current_target": link.as_ref().map(|l| l.target.display().to_string()),
        "releases": rows,
    });
    printer.result(&json, || {
        if rows.is_empty() {
            return format!("No releases in {}\n", deploy.root().display());
        }
        let mut text = String::new();
        for row in &rows {
            let mark = if row.current { "*" } else { " " };
            let when = row.staged_at.as_deref().unwrap_or("");
            let commit = row
                .git_commit
                .as_deref()
                .map_or(String::new(), |c| format!("  {}", &c[..c.len().min(12)]));
            let user = row
                .user
                .as_deref()
                .map_or(String::new(), |u| format!("  {u}"));
            text.push_str(&format!("{mark} {:<20} {when}{user}{commit}\n", row.id));
        }
        if let (Some(link), None) = (&link, &current) {
            text.push_str(&format!(
                "  current points outside releases/: {}\n",
                link.target.display()
            ));
        }
        text
    });
    Ok(())
}
