//! Git as the deploy source, with real git: a bare repository as the remote (with a
//! submodule, itself a bare repository), a work clone that commits and pushes, `--ref`,
//! `[deploy] repository` + `branch`, the clone kept in the cache, `--if-changed`, and what
//! history and `releases` say about the commit, its ref, its author and who deployed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::*;

const AUTHOR: &str = "Ann Author <ann@example.com>";
const GIT_USER: &str = "Deploy Person <deployer@example.com>";

/// A sandbox with a remote (`remote.git`, bare), its submodule (`sub.git`, bare) and a
/// work clone (`work/`). Every git and cutover run gets its own HOME and cache in the
/// sandbox, so nothing of the machine's git config or cache is used or touched.
struct Repo {
    sb: Sandbox,
}

impl Repo {
    /// Commits on the remote: `v1` (tag `v1.0.0`): index.php "v1", .gitignore, the
    /// submodule at `modules/sub`; branch `feature` adds feature.php to it; `main` goes on
    /// with index.php "v2".
    fn new() -> Repo {
        let repo = Repo { sb: Sandbox::new() };
        let home = repo.home();
        write(
            &home.join(".gitconfig"),
            "[user]\n\tname = Deploy Person\n\temail = deployer@example.com\n\
             [init]\n\tdefaultBranch = main\n\
             [protocol \"file\"]\n\tallow = always\n\
             [advice]\n\tdetachedHead = false\n",
        );
        let root = repo.sb.path().to_path_buf();
        repo.git(&root, &["init", "-q", "--bare", "sub.git"]);
        repo.git(&root, &["clone", "-q", "sub.git", "subwork"]);
        let subwork = root.join("subwork");
        write(&subwork.join("lib.php"), "<?php // lib\n");
        write(&subwork.join(".gitignore"), "*.tmp\n");
        repo.git(&subwork, &["add", "."]);
        repo.git(&subwork, &["commit", "-q", "-m", "lib"]);
        repo.git(&subwork, &["push", "-q", "origin", "main"]);

        repo.git(&root, &["init", "-q", "--bare", "remote.git"]);
        repo.git(&root, &["clone", "-q", "remote.git", "work"]);
        let work = repo.work();
        write(&work.join("index.php"), "v1\n");
        write(&work.join(".gitignore"), ".env\nvendor/\n");
        let sub_url = format!("file://{}", root.join("sub.git").display());
        repo.git(&work, &["submodule", "add", "-q", &sub_url, "modules/sub"]);
        repo.git(&work, &["add", "."]);
        repo.git(&work, &["commit", "-q", "-m", "v1"]);
        repo.git(&work, &["tag", "v1.0.0"]);
        repo.git(&work, &["checkout", "-q", "-b", "feature"]);
        write(&work.join("feature.php"), "feature\n");
        repo.git(&work, &["add", "."]);
        repo.git(&work, &["commit", "-q", "-m", "feature"]);
        repo.git(&work, &["checkout", "-q", "main"]);
        repo.commit("index.php", "v2\n", "v2");
        repo.git(
            &work,
            &["push", "-q", "--tags", "origin", "main", "feature"],
        );
        // What must never be deployed from a commit: untracked and ignored files.
        write(&work.join("untracked.txt"), "not committed\n");
        write(&work.join(".env"), "SECRET=1\n");
        write(&work.join("vendor/autoload.php"), "<?php\n");
        write(
            &work.join("modules/sub/scratch.tmp"),
            "ignored by the submodule\n",
        );
        repo
    }

    fn home(&self) -> PathBuf {
        self.sb.path().join("home")
    }

    fn work(&self) -> PathBuf {
        self.sb.path().join("work")
    }

    fn remote(&self) -> PathBuf {
        self.sb.path().join("remote.git")
    }

    fn cache(&self) -> PathBuf {
        self.sb.path().join("cache/cutover/git")
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("XDG_CACHE_HOME", self.sb.path().join("cache"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Ann Author")
            .env("GIT_AUTHOR_EMAIL", "ann@example.com")
            .env("GIT_COMMITTER_NAME", "Ann Author")
            .env("GIT_COMMITTER_EMAIL", "ann@example.com");
        for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"] {
            cmd.env_remove(var);
        }
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(dir).args(args);
        self.env(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
        stdout(&out).trim().to_string()
    }

    /// Writes a file in the work clone and commits it on the current branch.
    fn commit(&self, rel: &str, text: &str, message: &str) -> String {
        write(&self.work().join(rel), text);
        self.git(&self.work(), &["add", rel]);
        self.git(&self.work(), &["commit", "-q", "-m", message]);
        self.git(&self.work(), &["rev-parse", "HEAD"])
    }

    fn push(&self) {
        self.git(&self.work(), &["push", "-q", "origin", "main"]);
    }

    fn commit_of(&self, rev: &str) -> String {
        self.git(&self.work(), &["rev-parse", &format!("{rev}^{{commit}}")])
    }

    fn run(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut cmd = self.sb.cutover();
        self.env(&mut cmd);
        cmd.args(args).envs(extra_env.iter().copied());
        cmd.output().unwrap()
    }

    /// `cutover deploy args… --to deploy --json`, asserting success.
    fn deploy(&self, args: &[&str]) -> Value {
        self.deploy_env(args, &[])
    }

    fn deploy_env(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let to = self.sb.to();
        let mut all = vec!["deploy"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--to", &to, "--keep", "100", "--json"]);
        let out = self.run(&all, env);
        assert!(out.status.success(), "deploy {args:?}:\n{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A settings file deploying `repository` (and `branch`, when given).
    fn repository_config(&self, repository: &str, branch: Option<&str>) -> String {
        let branch = branch.map_or(String::new(), |b| format!("branch = \"{b}\"\n"));
        self.sb.config(
            "git.toml",
            &format!("[deploy]\nrepository = \"{repository}\"\n{branch}"),
        )
    }
}

/// Every file and symlink of a release, relative to it, with its content.
fn release_files(dir: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let content = std::fs::read_to_string(&path).unwrap_or_default();
                out.push((rel, content));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn names(files: &[(String, String)]) -> BTreeSet<&str> {
    files.iter().map(|(name, _)| name.as_str()).collect()
}

fn content<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    files
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c.as_str())
        .unwrap_or_else(|| panic!("{name} not in the release: {files:?}"))
}

fn set(items: &[&'static str]) -> BTreeSet<&'static str> {
    items.iter().copied().collect()
}

/// A commit's tree: tracked files and the submodule's, its `.gitmodules`, the RELEASE file.
fn v1_tree() -> BTreeSet<&'static str> {
    set(&[
        ".gitignore",
        ".gitmodules",
        "RELEASE",
        "index.php",
        "modules/sub/.gitignore",
        "modules/sub/lib.php",
    ])
}

#[test]
fn ref_deploys_exactly_the_tree_of_a_tag_a_branch_or_a_commit() {
    let repo = Repo::new();
    let work = repo.work().display().to_string();

    let doc = repo.deploy(&[&work, "--ref", "v1.0.0", "--release", "tag"]);
    let files = release_files(&repo.sb.release_dir("tag"));
    assert_eq!(
        names(&files),
        v1_tree(),
        "untracked and ignored files stay out"
    );
    assert_eq!(content(&files, "index.php"), "v1\n");
    let source = &doc["source"];
    assert_eq!(source["git_commit"], repo.commit_of("v1.0.0"), "{doc}");
    assert_eq!(source["git_ref"], "v1.0.0");
    assert_eq!(source["git_author"], AUTHOR);
    assert_eq!(source["deployer"], GIT_USER, "the git user of the source");
    assert_eq!(source["git_dirty"], Value::Null, "a commit is never dirty");

    let doc = repo.deploy(&[&work, "--ref", "feature", "--release", "branch"]);
    let files = release_files(&repo.sb.release_dir("branch"));
    let mut expected = v1_tree();
    expected.insert("feature.php");
    assert_eq!(names(&files), expected);
    assert_eq!(doc["source"]["git_branch"], "feature");
    assert_eq!(doc["source"]["git_commit"], repo.commit_of("feature"));

    // The work tree has uncommitted changes on main: a commit id deploys the commit only.
    write(&repo.work().join("index.php"), "edited, not committed\n");
    let main = repo.commit_of("main");
    repo.deploy(&[&work, "--ref", &main, "--release", "commit"]);
    let files = release_files(&repo.sb.release_dir("commit"));
    assert_eq!(names(&files), v1_tree());
    assert_eq!(content(&files, "index.php"), "v2\n");
    assert_eq!(content(&files, "RELEASE").trim(), "commit");
}

#[test]
fn repository_and_branch_are_cloned_once_then_fetched_keeping_unchanged_files() {
    let repo = Repo::new();
    let url = format!("file://{}", repo.remote().display());
    let config = repo.repository_config(&url, Some("main"));

    let doc = repo.deploy(&["--config", &config, "--release", "r1"]);
    let files = release_files(&repo.sb.release_dir("r1"));
    assert_eq!(names(&files), v1_tree());
    assert_eq!(content(&files, "index.php"), "v2\n");
    let source = &doc["source"];
    assert_eq!(source["git_repository"], url.as_str(), "{doc}");
    assert_eq!(source["path"], url.as_str());
    assert_eq!(source["git_ref"], "main");
    assert_eq!(source["git_branch"], "main");
    assert_eq!(source["git_commit"], repo.commit_of("main"));

    // One clone of the repository in the cache, with the files of the commit.
    let clones: Vec<PathBuf> = std::fs::read_dir(repo.cache())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(".git").is_dir())
        .collect();
    assert_eq!(clones.len(), 1, "{clones:?}");
    let clone = &clones[0];
    use std::os::unix::fs::MetadataExt;
    let git_dir_inode = std::fs::metadata(clone.join(".git")).unwrap().ino();
    // A file the next commit does not change: git must leave it alone (same inode, same
    // mtime to the nanosecond), so staging links it by the quick check.
    let gitignore = clone.join(".gitignore");
    let before = std::fs::metadata(&gitignore).unwrap();
    let index = clone.join("index.php");
    let index_before = std::fs::metadata(&index).unwrap().modified().unwrap();

    let v3 = repo.commit("index.php", "v3\n", "v3");
    repo.push();
    let doc = repo.deploy(&["--config", &config, "--release", "r2"]);
    assert_eq!(
        doc["source"]["git_commit"], v3,
        "the new commit was fetched"
    );
    let files = release_files(&repo.sb.release_dir("r2"));
    assert_eq!(content(&files, "index.php"), "v3\n");
    assert_eq!(
        std::fs::metadata(clone.join(".git")).unwrap().ino(),
        git_dir_inode,
        "the clone is kept and fetched into, not made again"
    );
    let after = std::fs::metadata(&gitignore).unwrap();
    assert_eq!(
        (after.ino(), after.modified().unwrap()),
        (before.ino(), before.modified().unwrap()),
        "a file the commit did not change is not rewritten"
    );
    assert_eq!(std::fs::read_to_string(&index).unwrap(), "v3\n");
    assert_ne!(
        std::fs::metadata(&index).unwrap().modified().unwrap(),
        index_before,
        "the changed file was written"
    );

    // --ref beats the branch of the file.
    let doc = repo.deploy(&["--config", &config, "--ref", "v1.0.0", "--release", "r3"]);
    assert_eq!(doc["source"]["git_ref"], "v1.0.0");
    let files = release_files(&repo.sb.release_dir("r3"));
    assert_eq!(content(&files, "index.php"), "v1\n");
}

#[test]
fn if_changed_skips_the_current_commit_and_deploys_a_new_one() {
    let repo = Repo::new();
    let remote = repo.remote().display().to_string();
    let config = repo.repository_config(&remote, Some("main"));

    // Nothing current yet: deploys.
    let first = repo.deploy(&["--config", &config, "--if-changed", "--release", "r1"]);
    assert_eq!(first["release"], "r1", "{first}");
    assert_eq!(first["skipped"], Value::Null);
    let history = repo.sb.history().len();

    let skipped = repo.deploy(&["--config", &config, "--if-changed", "--release", "r2"]);
    assert_eq!(skipped["skipped"], true, "{skipped}");
    assert_eq!(skipped["release"], "r1");
    assert_eq!(skipped["source"]["git_commit"], repo.commit_of("main"));
    assert_eq!(repo.sb.releases(), ["r1"]);
    assert_eq!(repo.sb.history().len(), history, "nothing recorded");
    let to = repo.sb.to();
    let out = repo.run(
        &["deploy", "--config", &config, "--to", &to, "--if-changed"],
        &[],
    );
    assert_eq!(exit_code(&out), 0, "{}", text(&out));
    let said = stdout(&out);
    assert!(said.contains("Nothing to deploy"), "{said}");
    assert!(said.contains(&repo.commit_of("main")[..12]), "{said}");

    let v3 = repo.commit("index.php", "v3\n", "v3");
    repo.push();
    let second = repo.deploy(&["--config", &config, "--if-changed", "--release", "r2"]);
    assert_eq!(second["release"], "r2", "{second}");
    assert_eq!(second["source"]["git_commit"], v3);
    assert_eq!(repo.sb.current().as_deref(), Some("r2"));
}

#[test]
fn history_and_releases_show_commit_ref_author_and_who_deployed() {
    let repo = Repo::new();
    let work = repo.work().display().to_string();
    let actor = [("GITHUB_ACTOR", "octocat")];
    let to = repo.sb.to();
    let out = repo.run(
        &[
            "deploy",
            &work,
            "--ref",
            "v1.0.0",
            "--to",
            &to,
            "--release",
            "h1",
        ],
        &actor,
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = stdout(&out);
    let commit = repo.commit_of("v1.0.0");
    assert!(
        said.contains(&format!("source: git {} (v1.0.0)", &commit[..12])),
        "{said}"
    );
    assert!(said.contains(AUTHOR), "{said}");
    assert!(
        said.contains("deployed by: octocat (GITHUB_ACTOR)"),
        "{said}"
    );

    let staged = &repo.sb.history()[0];
    assert_eq!(staged["event"], "staged");
    let source = &staged["source"];
    assert_eq!(source["git_commit"], commit.as_str(), "{staged}");
    assert_eq!(source["git_ref"], "v1.0.0");
    assert_eq!(source["git_author"], AUTHOR);
    assert_eq!(source["deployer"], "octocat (GITHUB_ACTOR)");
    assert!(!staged["user"].as_str().unwrap().is_empty(), "the OS user");

    let listed = repo.run(&["releases", "--to", &to, "--json"], &[]);
    assert!(listed.status.success(), "{}", text(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let row = &one_result(&listed)["releases"][0];
    assert_eq!(row["git_commit"], commit.as_str(), "{row}");
    assert_eq!(row["git_ref"], "v1.0.0");
    assert_eq!(row["git_author"], AUTHOR);
    assert_eq!(row["deployer"], "octocat (GITHUB_ACTOR)");

    let listed = repo.run(&["releases", "--to", &to], &[]);
    let line = stdout(&listed);
    for needle in [
        &commit[..12],
        "(v1.0.0)",
        "by Ann Author",
        "(octocat (GITHUB_ACTOR))",
    ] {
        assert!(line.contains(needle), "{needle} missing in: {line}");
    }
}

#[test]
fn a_work_tree_without_ref_leaves_out_ignored_files_and_names_its_changes() {
    let repo = Repo::new();
    let work = repo.work().display().to_string();
    write(&repo.work().join("index.php"), "edited\n");
    let to = repo.sb.to();
    let out = repo.run(&["deploy", &work, "--to", &to, "--release", "w1"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = stdout(&out);
    let head = repo.commit_of("HEAD");
    assert!(
        said.contains(&format!("source: git {} on main", &head[..12])),
        "{said}"
    );
    assert!(
        said.contains("2 uncommitted changes: M index.php, ?? untracked.txt"),
        "{said}"
    );

    let files = release_files(&repo.sb.release_dir("w1"));
    let mut expected = v1_tree();
    expected.insert("untracked.txt");
    assert_eq!(
        names(&files),
        expected,
        ".env, vendor/ and the submodule's *.tmp are ignored by git, so not deployed"
    );
    assert_eq!(
        content(&files, "index.php"),
        "edited\n",
        "the work tree as it is"
    );

    let staged = &repo.sb.history()[0]["source"];
    assert_eq!(staged["git_commit"], head.as_str(), "{staged}");
    assert_eq!(staged["git_branch"], "main");
    assert_eq!(staged["git_dirty"], true);
    assert_eq!(staged["git_changes_count"], 2);
    assert_eq!(
        staged["git_changes"],
        serde_json::json!(["M index.php", "?? untracked.txt"])
    );
    assert_eq!(staged["git_ref"], Value::Null, "no ref: the work tree");

    // --if-changed never skips a work tree with changes, even on the same commit.
    let again = repo.deploy(&[&work, "--if-changed", "--release", "w2"]);
    assert_eq!(again["release"], "w2", "{again}");
}

#[test]
fn an_unknown_ref_or_repository_changes_nothing() {
    let repo = Repo::new();
    let work = repo.work().display().to_string();
    let to = repo.sb.to();

    let out = repo.run(&["deploy", &work, "--to", &to, "--ref", "no-such-ref"], &[]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("no-such-ref") && err.contains(&work), "{err}");
    assert!(err.contains("hint: `git ls-remote"), "{err}");
    assert!(!repo.sb.deploy().exists(), "the deploy path was created");

    let remote = repo.remote().display().to_string();
    let config = repo.repository_config(&remote, None);
    let out = repo.run(
        &[
            "deploy", "--config", &config, "--to", &to, "--ref", "v9.9.9",
        ],
        &[],
    );
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("v9.9.9") && err.contains(&remote), "{err}");
    assert!(err.contains(&format!("git ls-remote {remote}")), "{err}");
    assert!(!repo.sb.deploy().exists());

    let out = repo.run(
        &[
            "deploy",
            "--config",
            &config,
            "--to",
            &to,
            "--ref=--upload-pack=touch",
        ],
        &[],
    );
    assert_eq!(exit_code(&out), 2, "{}", text(&out));

    let missing = repo.sb.path().join("missing.git").display().to_string();
    let config = repo.repository_config(&missing, Some("main"));
    let out = repo.run(&["deploy", "--config", &config, "--to", &to], &[]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains(&missing), "{err}");
    assert!(!repo.sb.deploy().exists());

    // A plain directory (not a repository) has nothing to resolve a ref in.
    repo.sb.write("index.php", "plain\n");
    let src = repo.sb.src_arg();
    let out = repo.run(&["deploy", &src, "--to", &to, "--ref", "main"], &[]);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(
        stderr(&out).contains("not in a git repository"),
        "{}",
        text(&out)
    );
    assert!(!repo.sb.deploy().exists());

    // And the repository's own deploy still works afterwards.
    let doc = repo.deploy(&[&work, "--ref", "v1.0.0"]);
    assert_eq!(doc["source"]["git_ref"], "v1.0.0");
}
