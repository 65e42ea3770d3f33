//! Compiling a release into the pool's OPcache before it goes live, and letting go of the
//! scripts of releases no request runs any more.
//!
//! OPcache's memory is shared by every worker of a pool, so a script compiled by one
//! request (`opcache_compile_file`) is a hit for every worker afterwards. With nginx's
//! `$realpath_root` a release's scripts are keyed by their real path
//! (`releases/<id>/...`), so compiling the new release's real paths before the switch
//! fills exactly the entries requests will look up after it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{parse_reply, Error, Pool, ResetReport, Result};

const CACHED_SCRIPT: &str = include_str!("scripts/cached.php");
const COMPILE_SCRIPT: &str = include_str!("scripts/compile.php");
const INVALIDATE_SCRIPT: &str = include_str!("scripts/invalidate.php");

/// Files sent per compile request; the request itself stops after its time slice.
const CHUNK: usize = 256;

/// Resets `reset_leaving_only` makes at most, and how long it lets requests that were
/// under way at a restart finish compiling before it looks.
const RESETS: u32 = 3;
const RESET_GRACE: Duration = Duration::from_millis(100);

/// One script OPcache holds, relative to the directory asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(String, u64, u64)")]
pub struct CachedScript {
    pub path: String,
    /// Shared memory it takes (`memory_consumption`).
    pub memory: u64,
    /// Requests that found it cached.
    pub hits: u64,
}

/// cached.php sends each script as `[path, memory, hits]`: thousands of them.
impl From<(String, u64, u64)> for CachedScript {
    fn from((path, memory, hits): (String, u64, u64)) -> Self {
        CachedScript { path, memory, hits }
    }
}

/// What the pool's OPcache holds under one directory, and its memory as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CachedTree {
    pub scripts: Vec<CachedScript>,
    #[serde(flatten)]
    pub counters: CacheCounters,
}

impl CachedTree {
    /// The scripts by their first directory (a release, when listed under `releases/`),
    /// with paths relative to it; scripts straight in the listed directory are left out.
    pub fn by_dir(self) -> BTreeMap<String, Vec<CachedScript>> {
        let mut dirs: BTreeMap<String, Vec<CachedScript>> = BTreeMap::new();
        for script in self.scripts {
            let Some((dir, path)) = script.path.split_once('/') else {
                continue;
            };
            let path = path.to_string();
            dirs.entry(dir.to_string())
                .or_default()
                .push(CachedScript { path, ..script });
        }
        dirs
    }
}

/// What OPcache holds of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCache {
    pub release: String,
    pub scripts: u64,
    pub memory: u64,
}

impl ReleaseCache {
    /// Counts and memory per directory of [`CachedTree::by_dir`].
    pub fn tally(dirs: &BTreeMap<String, Vec<CachedScript>>) -> Vec<ReleaseCache> {
        dirs.iter()
            .map(|(release, scripts)| ReleaseCache {
                release: release.clone(),
                scripts: scripts.len() as u64,
                memory: scripts.iter().map(|s| s.memory).sum(),
            })
            .collect()
    }
}

/// OPcache's memory and counters, without its scripts. Any compile, invalidation or
/// restart changes them (memory is taken or wasted, a script or restart counted; PHP 8.1's
/// inheritance cache also takes memory when a class is first linked at run time), so with
/// `validate_timestamps=0` two equal readings mean the same scripts are cached. With
/// timestamps validated, a file changed on disk is no longer cached without any counter
/// moving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheCounters {
    pub used_memory: u64,
    pub free_memory: u64,
    pub wasted_memory: u64,
    pub cached_scripts: u64,
    pub cached_keys: u64,
    pub max_cached_keys: u64,
    pub cache_full: bool,
    pub oom_restarts: u64,
    pub hash_restarts: u64,
    pub manual_restarts: u64,
    pub start_time: i64,
    pub last_restart_time: i64,
    pub validate_timestamps: bool,
}

impl CacheCounters {
    /// OPcache's shared memory for scripts: used, free and wasted.
    pub fn total_memory(&self) -> u64 {
        self.used_memory + self.free_memory + self.wasted_memory
    }
}

#[derive(Deserialize)]
struct CachedReply {
    error: Option<String>,
    #[serde(flatten)]
    tree: CachedTree,
}

/// How far a compile may go.
#[derive(Debug, Clone, Copy)]
pub struct CompileBudget {
    /// No request starts after this.
    pub deadline: Instant,
    /// How long one request may compile: a worker is held no longer than this.
    pub slice: Duration,
    /// Free OPcache memory that must remain after each script.
    pub reserve: u64,
}

/// Why a compile stopped before the end of its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompileStop {
    /// The deadline passed.
    Deadline,
    /// The next script would have left less free memory than the reserve.
    Memory,
    /// OPcache's hash table (`max_accelerated_files`) is full.
    Keys,
}

/// What a compile did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompileOutcome {
    pub compiled: u64,
    /// Already in OPcache (compiled by a request, or by an earlier pre-warm).
    pub already_cached: u64,
    /// Not in the new release.
    pub missing: u64,
    /// Did not compile; the first few, relative to the release.
    pub failed: Vec<String>,
    pub failed_count: u64,
    pub stopped: Option<CompileStop>,
    /// FastCGI requests it took.
    pub requests: u32,
    pub free_memory: u64,
}

#[derive(Deserialize)]
struct CompileReply {
    error: Option<String>,
    #[serde(default)]
    done: usize,
    #[serde(default)]
    compiled: u64,
    #[serde(default)]
    cached: u64,
    #[serde(default)]
    missing: u64,
    #[serde(default)]
    failed: Vec<String>,
    #[serde(default)]
    stopped: Option<CompileStop>,
    #[serde(default)]
    free_memory: u64,
}

#[derive(Deserialize)]
struct InvalidateReply {
    error: Option<String>,
    #[serde(default)]
    invalidated: u64,
}

/// Failed scripts named in a report; the rest are counted.
const FAILED_NAMED: usize = 10;

impl Pool {
    /// The scripts OPcache holds under `dir` (a real path on this host), relative to it.
    pub fn cached_under(&self, dir: &Path) -> Result<CachedTree> {
        let root = self.root_param(dir)?;
        let body = self.with_script("cached", CACHED_SCRIPT, |pool, script| {
            pool.call(script, |r| r.param("CUTOVER_ROOT", root.clone()))
        })?;
        let reply: CachedReply = parse_reply(&body)?;
        if let Some(error) = reply.error {
            return Err(Error::Opcache(error));
        }
        Ok(reply.tree)
    }

    /// OPcache's counters alone: a twentieth of the cost of listing 3,000 scripts
    /// (`scripts/bench-opcache-status`: 0.95 ms against 21.5 ms for 3,400 scripts).
    pub fn cache_counters(&self) -> Result<CacheCounters> {
        let body = self.with_script("cached", CACHED_SCRIPT, |pool, script| {
            pool.call(script, |r| r.param("CUTOVER_COUNTERS", "1"))
        })?;
        let reply: CachedReply = parse_reply(&body)?;
        if let Some(error) = reply.error {
            return Err(Error::Opcache(error));
        }
        Ok(reply.tree.counters)
    }

    /// Compiles `scripts` (relative to `dir`, a real path on this host) into OPcache, in
    /// requests of at most `budget.slice` each, one after another: at most one worker is
    /// busy with it at any moment. A request that dies (a fatal compile error) is retried
    /// one script at a time until the script that kills it is found and skipped.
    pub fn compile(
        &self,
        dir: &Path,
        scripts: &[CachedScript],
        budget: CompileBudget,
    ) -> Result<CompileOutcome> {
        let root = self.root_param(dir)?;
        self.with_script("compile", COMPILE_SCRIPT, |pool, script| {
            let mut outcome = CompileOutcome::default();
            let mut at = 0;
            let mut one_by_one = false;
            while at < scripts.len() {
                if Instant::now() >= budget.deadline {
                    outcome.stopped = Some(CompileStop::Deadline);
                    break;
                }
                let end = (at + if one_by_one { 1 } else { CHUNK }).min(scripts.len());
                let files: Vec<(&str, u64)> = scripts[at..end]
                    .iter()
                    .map(|s| (s.path.as_str(), s.memory))
                    .collect();
                let job = serde_json::json!({
                    "root": root,
                    "files": files,
                    "slice_ms": budget.slice.as_millis() as u64,
                    "reserve": budget.reserve,
                });
                outcome.requests += 1;
                let reply = pool
                    .call_post(script, job.to_string().into_bytes())
                    .and_then(|body| parse_reply::<CompileReply>(&body));
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(Error::BadReply { .. }) if one_by_one => {
                        outcome.failed_count += 1;
                        if outcome.failed.len() < FAILED_NAMED {
                            outcome.failed.push(scripts[at].path.clone());
                        }
                        at += 1;
                        one_by_one = false;
                        continue;
                    }
                    Err(Error::BadReply { .. }) => {
                        one_by_one = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if let Some(error) = reply.error {
                    return Err(Error::Opcache(error));
                }
                outcome.compiled += reply.compiled;
                outcome.already_cached += reply.cached;
                outcome.missing += reply.missing;
                outcome.failed_count += reply.failed.len() as u64;
                for failed in reply.failed {
                    if outcome.failed.len() < FAILED_NAMED {
                        outcome.failed.push(failed);
                    }
                }
                outcome.free_memory = reply.free_memory;
                if reply.stopped.is_some() {
                    outcome.stopped = reply.stopped;
                    break;
                }
                // A reply that claims more than it was sent, or no progress, ends the
                // loop rather than spinning.
                if reply.done == 0 || reply.done > end - at {
                    return Err(Error::Opcache(format!(
                        "the compile script answered {} of {} scripts done",
                        reply.done,
                        end - at
                    )));
                }
                at += reply.done;
                one_by_one = false;
            }
            Ok(outcome)
        })
    }

    /// Drops `scripts` (relative to `dir`) from OPcache. Their memory becomes wasted, not
    /// free: OPcache reuses wasted memory only after a restart.
    pub fn invalidate(&self, dir: &Path, scripts: &[String]) -> Result<u64> {
        let root = self.root_param(dir)?;
        self.with_script("invalidate", INVALIDATE_SCRIPT, |pool, script| {
            let mut invalidated = 0;
            for chunk in scripts.chunks(1024) {
                let job = serde_json::json!({ "root": root, "files": chunk });
                let body = pool.call_post(script, job.to_string().into_bytes())?;
                let reply: InvalidateReply = parse_reply(&body)?;
                if let Some(error) = reply.error {
                    return Err(Error::Opcache(error));
                }
                invalidated += reply.invalidated;
            }
            Ok(invalidated)
        })
    }

    /// `dir` as the pool sees it (inside its chroot), with a trailing `/` so that a
    /// prefix match cannot take `releases/10` for `releases/1`.
    /// `reset`, then looks again: while OPcache holds scripts under `releases` (the deploy
    /// path's releases directory, a real path) outside `live`, resets again, at most
    /// `RESETS` times in all. Returns the last reset's report and how many it took.
    ///
    /// A restart waits only for requests that have used the cache. One that opened its
    /// script before the switch (through `current`, or the worker's realpath cache) and
    /// was preempted before its first use is not waited for; it then compiles the old
    /// release into the emptied cache under the path the web server passes, where
    /// `validate_timestamps=0` keeps it until the next reset (seen in CI: the old
    /// release served for 10 s after a switch). Its full path is the old release's real
    /// path, so it shows under `releases/<old>`.
    pub fn reset_leaving_only(
        &self,
        wait: Duration,
        releases: &Path,
        live: &str,
    ) -> Result<(ResetReport, u32)> {
        let prefix = format!("{live}/");
        let mut resets = 0;
        loop {
            let report = self.reset(wait)?;
            resets += 1;
            if resets == RESETS {
                return Ok((report, resets));
            }
            std::thread::sleep(RESET_GRACE);
            let foreign = self
                .cached_under(releases)?
                .scripts
                .into_iter()
                .filter(|script| !script.path.starts_with(&prefix))
                .collect::<Vec<_>>();
            let Some(first) = foreign.first() else {
                return Ok((report, resets));
            };
            tracing::warn!(
                resets,
                scripts = foreign.len(),
                first = %first.path,
                "OPcache holds another release's scripts after the reset: resetting again"
            );
        }
    }

    fn root_param(&self, dir: &Path) -> Result<String> {
        let inside = self.pool_path(dir)?;
        let mut root = inside.to_string_lossy().into_owned();
        if !root.ends_with('/') {
            root.push('/');
        }
        Ok(root)
    }
}
