use cutover_core::listing::ReleaseList;
use cutover_protocol::Access;

use crate::cli::{GlobalArgs, TargetArgs};
use crate::error::Result;
use crate::printer::Printer;
use crate::{hosts, settings};

pub fn releases(target: &TargetArgs, global: &GlobalArgs, printer: Printer) -> Result<()> {
    let config = settings::load_config(global)?;
    let plans = settings::host_plans(target, &config)?;
    let parallel = settings::parallel(None);
    let observer = hosts::quiet_observer();
    let outcome = hosts::on_fleet(&plans, Access::Read, parallel, observer, printer, |fleet| {
        fleet.read(|host| host.releases())
    })?;
    let docs: Vec<serde_json::Value> = outcome
        .hosts
        .iter()
        .map(|(report, list)| {
            let mut doc = serde_json::to_value(report).unwrap_or_default();
            doc["result"] = serde_json::to_value(list).unwrap_or_default();
            doc
        })
        .collect();
    printer.result(&serde_json::json!({ "hosts": docs }), || {
        let many = outcome.hosts.len() > 1;
        let mut text = String::new();
        for (report, list) in &outcome.hosts {
            let Some(list) = list else { continue };
            if many {
                text.push_str(&format!("{}:\n", report.host));
            }
            let listing = describe(list);
            for line in listing.lines() {
                text.push_str(if many { "  " } else { "" });
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    });
    Ok(())
}

fn describe(list: &ReleaseList) -> String {
    if list.releases.is_empty() {
        return format!("No releases in {}\n", list.deploy_path.display());
    }
    let mut text = String::new();
    for row in &list.releases {
        let mark = if row.current { "*" } else { " " };
        let when = row.staged_at.as_deref().unwrap_or("");
        let mut commit = row.git_commit.as_deref().map_or(String::new(), |c| {
            format!("  {}", crate::commands::deploy::short(c))
        });
        if let Some(given) = &row.git_ref {
            commit.push_str(&format!(" ({given})"));
        }
        if row.git_dirty {
            commit.push_str(" + uncommitted changes");
        }
        if let Some(author) = &row.git_author {
            commit.push_str(&format!(" by {}", author_name(author)));
        }
        let mut user = row
            .user
            .as_deref()
            .map_or(String::new(), |u| format!("  {u}"));
        if let Some(deployer) = &row.deployer {
            user.push_str(&format!(" ({deployer})"));
        }
        text.push_str(&format!(
            "{mark} {:<20} {when}{user}{commit}\n",
            row.id.as_str()
        ));
    }
    if let (Some(target), None) = (&list.current_target, &list.current) {
        text.push_str(&format!("  current points outside releases/: {target}\n"));
    }
    text
}

/// `Jane Doe` of `Jane Doe <jane@example.com>`: the listing stays one short line per
/// release; `--json` has the whole.
fn author_name(author: &str) -> &str {
    author.split(" <").next().unwrap_or(author)
}
