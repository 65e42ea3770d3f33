//! The steps of staging one release on one deploy path: name it, fill it (from a local
//! directory or a received manifest), run its commands, move it into `releases/`. The
//! order of the whole deploy (switch, refresh, commit, cleanup) is the pipeline's.

use std::path::{Path, PathBuf};

use crate::assets::CarryReport;
use crate::error::{Error, IoContext, Result};
use crate::history::{self, Event, EventKind, Source};
use crate::layout::DeployPath;
use crate::release::ReleaseId;
use crate::stage::{self, Observer, Populate, StageStats};
use crate::tree::Excludes;
use crate::Mode;

/// Everything a deploy needs to know, resolved from flags and cutover.toml by the caller.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub source: PathBuf,
    pub release: Option<ReleaseId>,
    pub exclude: Vec<String>,
    pub shared_dirs: Vec<String>,
    pub shared_files: Vec<String>,
    pub build: Vec<String>,
    /// Hooks will run in the release between `start_release` and `finish_release`.
    pub hooks_follow: bool,
    pub keep_releases: usize,
    /// File written at the release root holding the release id.
    pub release_file: String,
    /// Static files of earlier releases kept reachable in new ones.
    pub assets: crate::assets::AssetOptions,
    /// How long one build or hook command may run; `None`: no limit.
    pub hook_timeout: Option<std::time::Duration>,
    /// The host's name, for commands (`CUTOVER_HOST`).
    pub host: String,
    /// Paths made writable for `writable_user` once the hooks ran.
    pub writable: Vec<String>,
    pub writable_mode: crate::writable::WritableMode,
    /// Default: `writable::DEFAULT_USER`.
    pub writable_user: Option<String>,
}

impl DeployOptions {
    pub const DEFAULT_KEEP_RELEASES: usize = 5;
    pub const DEFAULT_RELEASE_FILE: &'static str = "RELEASE";

    pub fn new(source: impl Into<PathBuf>) -> Self {
        DeployOptions {
            source: source.into(),
            release: None,
            exclude: Vec::new(),
            shared_dirs: Vec::new(),
            shared_files: Vec::new(),
            build: Vec::new(),
            hooks_follow: false,
            keep_releases: Self::DEFAULT_KEEP_RELEASES,
            release_file: Self::DEFAULT_RELEASE_FILE.to_string(),
            assets: crate::assets::AssetOptions::default(),
            hook_timeout: None,
            host: "local".to_string(),
            writable: Vec::new(),
            writable_mode: crate::writable::WritableMode::default(),
            writable_user: None,
        }
    }
}

/// Names the new release and the one it follows (the current one, or the newest when
/// nothing is current yet). What an interrupted run left was cleared when the lock was
/// taken (`cleanup::remove_debris`).
pub fn begin(
    deploy: &DeployPath,
    requested: Option<ReleaseId>,
) -> Result<(ReleaseId, Option<ReleaseId>)> {
    let previous = deploy
        .current_release()?
        .or_else(|| deploy.releases().ok()?.pop());
    Ok((next_release_id(deploy, requested)?, previous))
}

/// What a release needs besides its files.
pub struct StageJob<'a> {
    pub release: &'a ReleaseId,
    /// The release it follows (current, or the newest): its pages are the ones being served.
    pub previous: Option<&'a ReleaseId>,
    pub opts: &'a DeployOptions,
    pub source: &'a Source,
}

/// Where the files of a new release come from: a directory on this machine, or a manifest
/// and a content stream sent by the deploying machine.
pub trait Fill {
    /// Fills `staging` (which exists). Files unchanged since `previous` are hard-linked
    /// when `link`, copied otherwise. Returns the counts and the files written.
    fn fill(
        &mut self,
        dir: &Path,
        previous: Option<&Path>,
        link: bool,
        observer: &dyn Observer,
    ) -> Result<(StageStats, Vec<PathBuf>)>;
}

/// A local source directory, linked against the previous release by the quick check.
pub struct SourceFill<'a> {
    pub source: &'a Path,
    pub excludes: &'a Excludes,
}

impl Fill for SourceFill<'_> {
    fn fill(
        &mut self,
        dir: &Path,
        previous: Option<&Path>,
        link: bool,
        observer: &dyn Observer,
    ) -> Result<(StageStats, Vec<PathBuf>)> {
        let populate = Populate {
            source: self.source,
            dest: dir,
            previous: if link { previous } else { None },
            excludes: self.excludes,
            dry_run: false,
        };
        let staged = stage::populate(&populate, observer)?;
        Ok((staged.stats, staged.copied))
    }
}

/// A release being filled at its final path: between `start_release` and
/// `finish_release`, the `before_switch` hooks run in it.
#[derive(Debug)]
pub struct Started {
    stats: StageStats,
    /// Files the fill wrote, when no command ran (then only these need flushing).
    copied: Vec<PathBuf>,
    /// Commands ran or will run: files are private copies until `finish_release`.
    private_copy: bool,
}

/// Starts a release at its final path `releases/<id>`, not yet current, so build
/// commands and hooks see the path the release is served from (`__DIR__`, `realpath()`
/// and `pwd -P` baked into caches stay valid after the switch): fills it, runs the build
/// commands, links the shared paths, writes the release file.
///
/// The release is unfinished until `finish_release`: its marker file
/// (`DeployPath::unfinished_marker`) exists before the directory does and goes only once
/// the release is complete, so nothing takes an unfinished one for a release. On failure
/// here the release is removed; once started, the caller removes it if it never
/// finishes (`discard_release`).
pub fn start_release(
    deploy: &DeployPath,
    job: &StageJob<'_>,
    previous: Option<&Path>,
    fill: &mut dyn Fill,
    observer: &dyn Observer,
) -> Result<Started> {
    let marker = deploy.unfinished_marker(job.release);
    std::fs::File::create(&marker).ctx("create", &marker)?;
    crate::swap::fsync_dir(&deploy.state_dir())?;
    let dir = deploy.release(job.release);
    let started = std::fs::create_dir(&dir)
        .ctx("create the release directory", &dir)
        .and_then(|()| fill_release(deploy, &dir, previous, job, fill, observer));
    if started.is_err() {
        let _ = discard_unfinished(deploy, job.release);
    }
    started
}

/// Removes an unfinished release and its marker. The history names it only when a deploy
/// died between recording it complete and removing the marker: then it says it is gone.
pub fn discard_unfinished(deploy: &DeployPath, release: &ReleaseId) -> Result<()> {
    let events = history::read(&deploy.history_file())?;
    let named = events
        .iter()
        .rev()
        .find(|e| &e.release == release)
        .is_some_and(|e| e.event == EventKind::Staged);
    if named {
        crate::cleanup::remove_release(deploy, release)?;
    } else {
        crate::cleanup::drop_release_files(deploy, release)?;
    }
    let marker = deploy.unfinished_marker(release);
    match std::fs::remove_file(&marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", marker, e)),
        _ => Ok(()),
    }
}

/// Completes a started release: unchanged files become links to the previous release,
/// assets of earlier releases are carried in, everything is flushed, and the completion
/// is recorded (the `staged` event, and the marker removed). Returns the final counts.
pub fn finish_release(
    deploy: &DeployPath,
    job: &StageJob<'_>,
    previous: Option<&Path>,
    started: Started,
) -> Result<(StageStats, CarryReport)> {
    let opts = job.opts;
    let dir = deploy.release(job.release);
    let mut stats = started.stats;
    if started.private_copy {
        if let Some(previous) = previous {
            // Count what the source shipped, as a fill that links does: not our own files.
            let mut skip = Excludes::default();
            let ours = std::iter::once(&opts.release_file)
                .chain(&opts.shared_dirs)
                .chain(&opts.shared_files);
            for path in ours {
                skip.add_path(PathBuf::from(path.trim_matches('/')));
            }
            stats = stage::link_unchanged(&dir, previous, &skip)?;
        }
    }
    // After the links: a file shared with the previous release is split off before its
    // mode or ACL changes, and no later step links it back.
    if !opts.writable.is_empty() {
        crate::writable::apply(
            &dir,
            deploy,
            &opts.writable,
            opts.writable_mode,
            opts.writable_user
                .as_deref()
                .unwrap_or(crate::writable::DEFAULT_USER),
        )?;
    }
    // Last: commands and the quick check see only the release's own files.
    let mut assets = CarryReport::default();
    if let Some(previous) = job.previous {
        assets.changed_in_place =
            crate::assets::changed_in_place(deploy, &dir, previous, &opts.assets)?;
    }
    let sources = asset_sources(deploy, job)?;
    assets.carried =
        crate::assets::carry_into(deploy, job.release, &dir, &sources, &opts.assets)?.carried;
    if started.private_copy {
        // What the commands wrote is unknown: flush the whole file system.
        stage::flush(&dir, None)?;
    } else {
        let mut written = started.copied;
        written.push(dir.join(&opts.release_file));
        stage::flush(&dir, Some(&written))?;
    }
    crate::swap::fsync_dir(&deploy.releases_dir())?;
    // The event first: a release whose marker is gone must be in the history, or it
    // would sort as the oldest (adopted) one.
    let mut staged = Event::now(EventKind::Staged, job.release.clone());
    staged.source = Some(job.source.clone());
    history::append(&deploy.history_file(), &staged)?;
    let marker = deploy.unfinished_marker(job.release);
    std::fs::remove_file(&marker).ctx("remove", &marker)?;
    crate::swap::fsync_dir(&deploy.state_dir())?;
    Ok((stats, assets))
}

impl Started {
    /// What the fill did (before unchanged files are linked again by `finish_release`).
    pub fn stats(&self) -> StageStats {
        self.stats
    }
}

/// The releases whose assets a new release keeps: the one it follows first (its pages are
/// live), then the newest others, `keep` in all.
fn asset_sources(deploy: &DeployPath, job: &StageJob<'_>) -> Result<Vec<ReleaseId>> {
    let mut sources: Vec<ReleaseId> = job.previous.into_iter().cloned().collect();
    for id in deploy.releases()?.into_iter().rev() {
        if !sources.contains(&id) {
            sources.push(id);
        }
    }
    sources.truncate(job.opts.assets.keep);
    Ok(sources)
}

/// Fills the release directory. Without commands to run, unchanged files are linked from
/// the previous release straight away. With commands, they run on a private copy first and
/// unchanged files are linked only afterwards (`finish_release`): a command that rewrites a
/// file in place (PHP's file_put_contents truncates and writes the same inode) must never
/// reach an inode the previous, live release shares.
fn fill_release(
    deploy: &DeployPath,
    dir: &Path,
    previous: Option<&Path>,
    job: &StageJob<'_>,
    fill: &mut dyn Fill,
    observer: &dyn Observer,
) -> Result<Started> {
    let (opts, release) = (job.opts, job.release);
    let private_copy = !opts.build.is_empty() || opts.hooks_follow;
    let (stats, copied) = fill.fill(dir, previous, !private_copy, observer)?;
    let env = crate::hooks::HookEnv::new(deploy, release, job.previous, &opts.host);
    for script in &opts.build {
        crate::command::run(
            "build",
            script,
            dir,
            &env.pairs(),
            opts.hook_timeout,
            observer,
        )?;
    }
    link_shared(dir, opts)?;
    write_release_file(dir, &opts.release_file, release)?;
    Ok(Started {
        stats,
        copied,
        private_copy,
    })
}

/// The source directory, canonical; a clear error when it is missing or a file.
pub fn resolve_source(source: &Path) -> Result<PathBuf> {
    let dir = match std::fs::canonicalize(source) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::SourceMissing(source.to_path_buf()))
        }
        Err(e) => return Err(Error::io("resolve", source, e)),
    };
    if !dir.is_dir() {
        return Err(Error::SourceNotDirectory(source.to_path_buf()));
    }
    Ok(dir)
}

/// What of a source never goes into a release: `.git`, `[deploy] exclude`, and the
/// shared paths (they become links to `shared/`).
pub fn source_excludes(opts: &DeployOptions) -> Excludes {
    let mut excludes = Excludes::new([".git"]);
    for pattern in &opts.exclude {
        excludes.add(pattern);
    }
    for shared in opts.shared_dirs.iter().chain(&opts.shared_files) {
        excludes.add_path(PathBuf::from(shared.trim_matches('/')));
    }
    excludes
}

/// Removes a release this deploy staged that never became current (a fleet deploy
/// another host failed, a hook that failed). Refuses the current release.
pub fn discard_release(deploy: &DeployPath, release: &ReleaseId, mode: Mode<'_>) -> Result<()> {
    if mode.is_dry_run() || deploy.current_release()?.as_ref() == Some(release) {
        return Ok(());
    }
    if deploy.is_unfinished(release) {
        return discard_unfinished(deploy, release);
    }
    if deploy.release(release).exists() {
        return crate::cleanup::remove_release(deploy, release);
    }
    crate::cleanup::drop_release_files(deploy, release)
}

/// `base` (see `source_excludes`), and the deploy path itself when it lies inside the
/// source.
pub fn excludes_for(deploy: &DeployPath, source_dir: &Path, base: &Excludes) -> Result<Excludes> {
    let mut excludes = base.clone();
    // `cutover deploy . --to ./deploy` must not copy the deploy path into itself.
    let root = crate::tree::real_path(deploy.root());
    if let Ok(rel) = root.strip_prefix(source_dir) {
        if rel.as_os_str().is_empty() {
            return Err(Error::DeployPathInsideSource {
                deploy_path: deploy.root().to_path_buf(),
                source_dir: source_dir.to_path_buf(),
            });
        }
        excludes.add_path(rel.to_path_buf());
    }
    Ok(excludes)
}

/// Refuses a deploy path that is the source itself, before anything is created in it.
pub fn check_deploy_path(deploy: &DeployPath, source_dir: &Path) -> Result<()> {
    if crate::tree::real_path(deploy.root()) == source_dir {
        return Err(Error::DeployPathInsideSource {
            deploy_path: deploy.root().to_path_buf(),
            source_dir: source_dir.to_path_buf(),
        });
    }
    Ok(())
}

fn next_release_id(deploy: &DeployPath, requested: Option<ReleaseId>) -> Result<ReleaseId> {
    let taken = |id: &ReleaseId| {
        std::fs::symlink_metadata(deploy.release(id)).is_ok() || deploy.is_unfinished(id)
    };
    if let Some(id) = requested {
        if taken(&id) {
            return Err(Error::ReleaseExists(id.to_string()));
        }
        return Ok(id);
    }
    // Order comes from the history, so an id only has to be unused.
    let base = ReleaseId::timestamp(time::OffsetDateTime::now_utc());
    let mut id = base.clone();
    let mut n = 1;
    while taken(&id) {
        n += 1;
        id = base.with_suffix(n);
        if n > 10_000 {
            return Err(Error::ReleaseExists(id.to_string()));
        }
    }
    Ok(id)
}

/// Shared files must exist on the target; shared directories are created.
pub fn check_shared(deploy: &DeployPath, opts: &DeployOptions) -> Result<()> {
    for file in &opts.shared_files {
        let path = deploy.shared_dir().join(file);
        if !path.exists() {
            return Err(Error::SharedFileMissing(path));
        }
    }
    for dir in &opts.shared_dirs {
        let path = deploy.shared_dir().join(dir);
        std::fs::create_dir_all(&path).ctx("create the shared directory", &path)?;
    }
    Ok(())
}

/// Links `shared/<path>` into the release with a relative link.
/// depth as `releases/<id>`, so the same text resolves in both places).
fn link_shared(dir: &Path, opts: &DeployOptions) -> Result<()> {
    for rel in opts.shared_dirs.iter().chain(&opts.shared_files) {
        let rel = Path::new(rel.trim_matches('/'));
        let link = dir.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).ctx("create", parent)?;
        }
        let up = "../".repeat(rel.components().count() + 1);
        let target = PathBuf::from(format!("{up}{}", crate::layout::SHARED)).join(rel);
        std::os::unix::fs::symlink(&target, &link).ctx("link the shared path", &link)?;
    }
    Ok(())
}

/// Replaces, never rewrites: the file the source shipped may be a hard link into the
/// previous release.
fn write_release_file(dir: &Path, name: &str, release: &ReleaseId) -> Result<()> {
    let path = dir.join(name);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        return Err(Error::ReleaseFileIsDirectory(name.to_string()));
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("replace", path, e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ctx("create", parent)?;
    }
    std::fs::write(&path, format!("{release}\n")).ctx("write the release id to", &path)
}
