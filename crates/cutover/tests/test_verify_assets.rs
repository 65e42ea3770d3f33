//! `cutover verify --assets` on a real php-fpm behind a real nginx (issue 6): each release's
//! page links its own fingerprinted stylesheet; a page rendered by one release whose CSS is
//! asked of the other after a switch gets a 404, and verify must count and report it.

use crate::common::*;

/// The page of release `version`, linking `css`. The app answers 404 for any other path
/// (as a framework's router does: nginx's `try_files` hands unknown files to index.php).
/// The 20 ms of work stand in for rendering: a switch can fall between the moment nginx
/// resolved the release and the moment the browser asks for the CSS.
fn page(version: &str, css: &str) -> String {
    format!(
        "<?php\n\
         $path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);\n\
         if ($path !== '/' && $path !== '/index.php') {{ http_response_code(404); echo \"no route\\n\"; return; }}\n\
         usleep(20000);\n\
         echo '<!doctype html><html><head><link rel=\"stylesheet\" href=\"{css}\"></head><body>{version}</body></html>', \"\\n\";\n"
    )
}

/// Each release's stylesheet. Kept out of the directories cutover carries into later
/// releases by default (`[deploy] asset_dirs`): this measures the bare switch.
const CSS: [(&str, &str); 2] = [("v1", "/static/a.1111.css"), ("v2", "/static/b.2222.css")];

/// Both releases deployed; each holds its own stylesheet, and with `carried` the other's
/// too (what carrying old assets into a new release gives).
fn stack(carried: bool) -> (Sandbox, cutover_teststack::PhpFpm, cutover_teststack::Nginx) {
    let sb = Sandbox::new();
    for (version, css) in CSS {
        let dir = sb.path().join(version);
        let index = dir.join("public/index.php");
        write(&index, &page(version, css));
        // The two pages have the same size; written in the same clock tick they would have
        // the same mtime too, and the stage's quick check (as rsync's) would link v1's page
        // into v2 as unchanged.
        let tick = if version == "v1" { 1 } else { 2 };
        std::fs::File::options()
            .write(true)
            .open(&index)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(tick * 1000))
            .unwrap();
        for (other, other_css) in CSS {
            if other == version || carried {
                write(
                    &dir.join("public").join(&other_css[1..]),
                    &format!("body {{ --release: {other}; }}\n"),
                );
            }
        }
    }
    let (fpm, nginx) = php_stack(&sb, true);
    let to = sb.deploy().display().to_string();
    for (version, _) in CSS {
        let src = sb.path().join(version).display().to_string();
        sb.ok(&["deploy", &src, "--to", &to, "--release", version]);
    }
    cutover_teststack::make_readable_by_workers(sb.path()).unwrap();
    (sb, fpm, nginx)
}

/// A short verify with --assets: (exit code, stdout, stdout and stderr).
fn verify_assets(
    sb: &Sandbox,
    fpm: &cutover_teststack::PhpFpm,
    nginx: &cutover_teststack::Nginx,
    duration: &str,
    json: bool,
) -> (i32, String, String) {
    let socket = fpm.unix_socket().unwrap().display().to_string();
    let config = sb.path().join("verify.toml");
    write(
        &config,
        &format!("[php]\nfpm = \"unix:{socket}\"\n[refresh]\nstrategy = [\"none\"]\n"),
    );
    let (url, to) = (nginx.url("/index.php"), sb.deploy().display().to_string());
    let out = output_within(
        sb.cutover()
            .args([
                "verify",
                "--url",
                &url,
                "--to",
                &to,
                "--between",
                "v1,v2",
                "--assets",
                "--duration",
                duration,
                "--flip-every",
                "200ms",
                "--concurrency",
                "4",
                "--baseline",
                "300ms",
                "--settle",
                "1s",
                "--config",
                config.to_str().unwrap(),
            ])
            .args(json.then_some("--json")),
        std::time::Duration::from_secs(30),
    );
    (exit_code(&out), stdout(&out), text(&out))
}

fn verify_assets_json(
    sb: &Sandbox,
    fpm: &cutover_teststack::PhpFpm,
    nginx: &cutover_teststack::Nginx,
) -> (i32, serde_json::Value, String) {
    let (code, stdout, out) = verify_assets(sb, fpm, nginx, "3s", true);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, json, out)
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v["assets"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no assets.{key}: {v}"))
}

#[test]
fn assets_missing_from_the_other_release_fail_verify() {
    let (sb, fpm, nginx) = stack(false);
    let (code, v, out) = verify_assets_json(&sb, &fpm, &nginx);
    eprintln!("without carried assets: {}", v["assets"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(v["passed"], false, "{v}");
    // The pages themselves were fine: the failure is the assets'.
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["mixed"], 0, "{v}");
    assert!(v["served"]["b"].as_u64().unwrap() > 0, "{v}");
    assert!(
        count(&v, "requests") >= v["requests"].as_u64().unwrap(),
        "{v}"
    );
    let (failed, not_found) = (count(&v, "failed"), count(&v, "not_found"));
    assert!(not_found > 0, "no asset 404 while releases flipped: {v}");
    assert_eq!(failed, not_found, "{v}");
    // Each one had a switch between its page's request and its own answer.
    assert_eq!(count(&v, "failed_after_switch"), failed, "{v}");
    let by = &v["assets"]["failed_by_page"];
    assert_eq!(
        by["a"].as_u64().unwrap() + by["b"].as_u64().unwrap(),
        failed,
        "every failing page named its release: {v}"
    );
    let examples = v["assets"]["examples"].as_array().unwrap();
    assert!(!examples.is_empty() && examples.len() <= 5, "{v}");
    for example in examples {
        assert_eq!(example["status"], 404, "{v}");
        // A page asks for its own release's stylesheet, and the other release lacks it.
        let (page, url) = (
            example["page"].as_str().unwrap(),
            example["url"].as_str().unwrap(),
        );
        let css = CSS.iter().find(|(version, _)| *version == page).unwrap().1;
        assert_eq!(url, nginx.url(css), "{v}");
    }
    assert!(out.contains("asset requests failed"), "{out}");
    assert!(out.contains("asset_dirs"), "{out}");
}

#[test]
fn assets_carried_into_both_releases_pass_verify() {
    let (sb, fpm, nginx) = stack(true);
    let (code, v, out) = verify_assets_json(&sb, &fpm, &nginx);
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(count(&v, "failed"), 0, "{v}");
    assert_eq!(count(&v, "not_found"), 0, "{v}");
    assert_eq!(count(&v, "failed_after_switch"), 0, "{v}");
    assert_eq!(v["assets"]["examples"], serde_json::json!([]), "{v}");
    // Every page that worked was followed by its one stylesheet.
    let (a, b) = (&v["served"]["a"], &v["served"]["b"]);
    assert!(a.as_u64().unwrap() > 0 && b.as_u64().unwrap() > 0, "{v}");
    let pages = a.as_u64().unwrap() + b.as_u64().unwrap();
    assert_eq!(count(&v, "requests"), pages, "{v}");
    // The human form has the asset lines too.
    let (code, table, out) = verify_assets(&sb, &fpm, &nginx, "400ms", false);
    assert_eq!(code, 0, "{out}");
    assert!(
        table.contains("asset requests / failed / 404") && table.contains(" / 0 / 0\n"),
        "{out}"
    );
    assert!(
        table.contains("asset failures across a switch    0"),
        "{out}"
    );
}
