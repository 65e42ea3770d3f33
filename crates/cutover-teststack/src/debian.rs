//! Real PHP code no one here wrote: Debian packages, downloaded once per machine and
//! unpacked for a test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `packages` unpacked (`dpkg -x`) into `dir/<package>`, from `apt-get download` into a
/// cache shared by test runs. `None`, with the reason printed, when apt cannot download:
/// the caller skips.
pub fn debian_packages(packages: &[&str], dir: &Path) -> Option<Vec<PathBuf>> {
    let cache = std::env::temp_dir().join("cutover-test-debs");
    std::fs::create_dir_all(&cache).ok()?;
    let cached = |package: &str| {
        std::fs::read_dir(&cache)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
            })
    };
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| cached(p).is_none())
        .collect();
    if !missing.is_empty() {
        match Command::new("apt-get")
            .arg("download")
            .args(&missing)
            .current_dir(&cache)
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "skipped: apt-get download {} failed:\n{}",
                    missing.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                return None;
            }
            Err(e) => {
                eprintln!("skipped: apt-get is not available ({e})");
                return None;
            }
        }
    }
    let mut unpacked = Vec::new();
    for package in packages {
        let target = dir.join(package);
        let out = Command::new("dpkg")
            .arg("-x")
            .arg(cached(package)?)
            .arg(&target)
            .output()
            .expect("dpkg runs");
        assert!(
            out.status.success(),
            "dpkg -x {package} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        unpacked.push(target);
    }
    Some(unpacked)
}
