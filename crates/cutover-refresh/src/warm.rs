//! Before a switch: is there room in the pool's OPcache for the new release, and the
//! new release compiled into it (`prewarm`).
//!
//! Measured on a real app (issue 15): with `$realpath_root` and no reset, OPcache keeps
//! every release it has seen, and when it is full it neither restarts (old releases'
//! scripts are not "wasted") nor says so: every request compiles its scripts anew. So the
//! room is checked before every switch that keeps the cache, and scripts of releases that
//! have been out of service since an earlier switch are invalidated, which turns their
//! memory into wasted memory (reclaimed by OPcache's own restart once the cache fills).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cutover_config::OpcacheRoom;
use cutover_core::{DeployPath, ReleaseId};
use cutover_php::{CacheCounters, CachedScript, CompileBudget, CompileOutcome, Pool, ReleaseCache};
use serde::{Deserialize, Serialize};

use crate::RefreshError;

/// How long one compile request may hold a worker.
const SLICE: Duration = Duration::from_millis(100);
/// Free memory kept for scripts no pre-warm knows of (rarely used files, first hits of new
/// ones): a twentieth of OPcache's memory, at least 1 MiB.
const RESERVE_SHARE: u64 = 20;
const RESERVE_MIN: u64 = 1 << 20;

/// What was checked and done before a switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WarmReport {
    /// The release live when the check ran, whose cached scripts stand for the new one.
    pub live: Option<ReleaseId>,
    /// The pool listed its cached scripts. False when OPcache's counters were those of the
    /// previous check's listing (nothing compiled, invalidated or restarted since), which
    /// was used instead: a flip between two warm releases costs the pool ~1 ms, not ~20.
    #[serde(default)]
    pub listed: bool,
    pub room: RoomCheck,
    /// With `prewarm` (and room, or `opcache_room = "warn"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prewarm: Option<CompileOutcome>,
    /// Scripts of releases out of service since an earlier switch, invalidated.
    pub invalidated: u64,
    /// OPcache after all this, per release of this deploy path.
    pub cache: CacheContents,
    /// OPcache was restarted before the switch to make room (`opcache_room = "reset"`
    /// with `prewarm`, when wasted memory would make room), and the live release re-warmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<PlannedRestart>,
    /// OPcache will be reset after the switch (`opcache_room = "reset"`).
    pub reset_after_switch: bool,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A restart chosen by cutover before the switch, instead of one OPcache would schedule by
/// itself once full (at a moment nobody chose, cold, with the new release live).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlannedRestart {
    /// Wasted memory it gave back.
    pub wasted_memory: u64,
    /// Until the restart had happened (while it is pending OPcache serves nothing cached).
    pub seconds: f64,
    /// The live release's scripts compiled again right after it, the hottest first.
    pub live: CompileOutcome,
}

/// Free OPcache memory against what the new release is expected to take.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomCheck {
    pub free_memory: u64,
    pub wasted_memory: u64,
    /// What the live release's scripts take, less those the new release already has.
    pub needed: u64,
    /// Kept free for scripts no pre-warm knows of.
    pub reserve: u64,
    pub enough: bool,
    /// Not enough now, but enough once OPcache restarted (its wasted memory free again).
    #[serde(default)]
    pub after_restart: bool,
}

/// What OPcache holds, per release.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheContents {
    pub releases: Vec<ReleaseCache>,
    pub used_memory: u64,
    pub free_memory: u64,
    pub wasted_memory: u64,
    /// Every cached script, this deploy path's and others.
    pub cached_scripts: u64,
    pub cache_full: bool,
}

/// The cached scripts under `releases/`, by release directory name: kept by the
/// [`crate::Refresher`] from one switch to the next.
pub(crate) struct ByRelease {
    dir: PathBuf,
    /// OPcache's counters when it was listed.
    counters: CacheCounters,
    releases: BTreeMap<String, Vec<CachedScript>>,
}

impl ByRelease {
    fn ask(pool: &Pool, releases_dir: &Path) -> Result<ByRelease, RefreshError> {
        let tree = pool.cached_under(releases_dir)?;
        Ok(ByRelease {
            dir: releases_dir.to_path_buf(),
            counters: tree.counters,
            releases: tree.by_dir(),
        })
    }

    /// What OPcache holds now: `known` when the pool's counters are still those it was
    /// listed with (and it does not validate timestamps), else a new listing (and true).
    fn now(
        pool: &Pool,
        releases_dir: &Path,
        known: Option<ByRelease>,
    ) -> Result<(ByRelease, bool), RefreshError> {
        let reusable = |k: &ByRelease| k.dir == releases_dir && !k.counters.validate_timestamps;
        if let Some(known) = known.filter(reusable) {
            if pool.cache_counters()? == known.counters {
                return Ok((known, false));
            }
        }
        Ok((ByRelease::ask(pool, releases_dir)?, true))
    }

    fn scripts(&self, release: &ReleaseId) -> &[CachedScript] {
        self.releases
            .get(release.as_str())
            .map_or(&[], Vec::as_slice)
    }

    fn contents(&self) -> CacheContents {
        CacheContents {
            releases: ReleaseCache::tally(&self.releases),
            used_memory: self.counters.used_memory,
            free_memory: self.counters.free_memory,
            wasted_memory: self.counters.wasted_memory,
            cached_scripts: self.counters.cached_scripts,
            cache_full: self.counters.cache_full,
        }
    }
}

/// OPcache knows scripts by their real path; the deploy path itself may be reached
/// through a symlink.
fn real_releases_dir(deploy: &DeployPath) -> Result<PathBuf, RefreshError> {
    std::fs::canonicalize(deploy.releases_dir()).map_err(|e| {
        RefreshError::Warm(format!(
            "cannot resolve {}: {e}",
            deploy.releases_dir().display()
        ))
    })
}

/// What the pool's OPcache holds of each release of `deploy` (none before the first).
pub fn cached_releases(
    pool: &Pool,
    deploy: &DeployPath,
) -> Result<Vec<ReleaseCache>, RefreshError> {
    if !deploy.releases_dir().is_dir() {
        return Ok(Vec::new());
    }
    let tree = pool.cached_under(&real_releases_dir(deploy)?)?;
    Ok(ReleaseCache::tally(&tree.by_dir()))
}

/// How a host checks and warms before a switch.
pub(crate) struct WarmPlan {
    pub prewarm: bool,
    pub room: OpcacheRoom,
    pub prewarm_time: Duration,
    /// How long a planned restart may stay pending.
    pub reset_wait: Duration,
}

/// `known`: what the previous check left OPcache holding, replaced by what this one leaves.
pub(crate) fn before_switch(
    plan: &WarmPlan,
    pool: &Pool,
    deploy: &DeployPath,
    release: &ReleaseId,
    known: &mut Option<ByRelease>,
) -> Result<WarmReport, RefreshError> {
    let started = Instant::now();
    let live = deploy.current_release()?;
    let releases_dir = real_releases_dir(deploy)?;
    let mut report = WarmReport {
        live: live.clone(),
        ..WarmReport::default()
    };
    let (cached, listed) = ByRelease::now(pool, &releases_dir, known.take())?;
    report.listed = listed;
    let counters = cached.counters;

    // Out of service since an earlier switch, so no request is still running their code;
    // an invalidated script's memory is wasted until OPcache restarts, but it no longer
    // keeps a full cache from restarting.
    let drained: Vec<(String, u64)> = cached
        .releases
        .iter()
        .filter(|(id, _)| {
            live.as_ref().is_none_or(|l| l.as_str() != id.as_str()) && *id != release.as_str()
        })
        .flat_map(|(id, scripts)| {
            scripts
                .iter()
                .map(move |s| (format!("{id}/{}", s.path), s.memory))
        })
        .collect();
    // The status was read before the invalidation: what it turned into wasted memory.
    let mut wasted = counters.wasted_memory;
    if !drained.is_empty() {
        let paths: Vec<String> = drained.iter().map(|(path, _)| path.clone()).collect();
        report.invalidated = pool.invalidate(&releases_dir, &paths)?;
        wasted += drained.iter().map(|(_, memory)| memory).sum::<u64>();
    }

    let live_scripts: Vec<CachedScript> = match &live {
        Some(live) if live != release => cached.scripts(live).to_vec(),
        _ => Vec::new(),
    };
    let new_has: BTreeSet<&str> = cached
        .scripts(release)
        .iter()
        .map(|s| s.path.as_str())
        .collect();
    let live_count = live_scripts.len() as u64;
    let mut to_warm: Vec<CachedScript> = live_scripts
        .into_iter()
        .filter(|s| !new_has.contains(s.path.as_str()))
        .collect();
    // The new release's scripts already cached (a switch back to a warm release).
    let already_cached = live_count - to_warm.len() as u64;
    // The hottest first: when time or memory runs out, what is left is what is hit least.
    to_warm.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.path.cmp(&b.path)));

    let total = counters.total_memory();
    let reserve = (total / RESERVE_SHARE).max(RESERVE_MIN);
    let needed: u64 = to_warm.iter().map(|s| s.memory).sum();
    let keys_left = counters
        .max_cached_keys
        .saturating_sub(counters.cached_keys);
    let keys_short = counters.max_cached_keys != 0 && keys_left <= to_warm.len() as u64;
    let enough = counters.free_memory >= needed + reserve && !keys_short;
    // A restart frees the wasted memory (the drained releases' scripts) and every hash
    // slot; the live release is compiled again, then the new one.
    let live_memory: u64 = match &live {
        Some(l) if l != release => cached.scripts(l).iter().map(|s| s.memory).sum(),
        _ => 0,
    };
    let after_restart = !enough
        && counters.free_memory + wasted >= needed + reserve
        && live_memory + needed + reserve <= total
        && (counters.max_cached_keys == 0
            || counters.max_cached_keys > live_count + to_warm.len() as u64);
    report.room = RoomCheck {
        free_memory: counters.free_memory,
        wasted_memory: wasted,
        needed,
        reserve,
        enough,
        after_restart,
    };
    let mut warm = plan.prewarm;
    let mut restart = false;
    if !enough {
        let what = format!(
            "OPcache has {} free and {} wasted; the new release needs about {} (what {} takes) plus {} kept free",
            cutover_core::bytes::human(counters.free_memory),
            cutover_core::bytes::human(wasted),
            cutover_core::bytes::human(needed),
            live.as_ref().map_or("the live release".into(), |l| l.to_string()),
            cutover_core::bytes::human(reserve),
        );
        let what = if keys_short {
            format!(
                "{what}; and {keys_left} of opcache.max_accelerated_files' {} slots are free for {} scripts",
                counters.max_cached_keys,
                to_warm.len()
            )
        } else {
            what
        };
        let raise = if keys_short {
            "opcache.max_accelerated_files (and memory_consumption)"
        } else {
            "opcache.memory_consumption"
        };
        match plan.room {
            OpcacheRoom::Refuse => {
                return Err(RefreshError::NoRoom {
                    what,
                    after_restart,
                })
            }
            OpcacheRoom::Reset | OpcacheRoom::Restart if plan.prewarm && after_restart => {
                restart = true
            }
            OpcacheRoom::Reset => {
                warm = false;
                report.reset_after_switch = true;
                report.warnings.push(format!(
                    "{what}: OPcache is reset after the switch (opcache_room = \"reset\"), so the new release starts cold"
                ));
            }
            // `restart` is refused without prewarm, so with `after_restart` it restarted above.
            OpcacheRoom::Warn if after_restart => report.warnings.push(format!(
                "{what}: OPcache will restart by itself once full (cold, at a moment nobody chose, likely after the switch); with prewarm, opcache_room = \"restart\" restarts it before the switch and re-warms{}",
                if plan.prewarm { "; pre-warming what fits" } else { "" }
            )),
            OpcacheRoom::Warn | OpcacheRoom::Restart => report.warnings.push(format!(
                "{what}, and would not after a restart either: once OPcache is full every request compiles its scripts anew (it does not restart by itself); raise {raise} to about two releases' worth{}",
                if plan.prewarm { "; pre-warming what fits" } else { "" }
            )),
        }
    }

    if restart {
        // Everything the live release had cached is compiled again, and all of it is
        // what the new release needs.
        let mut live_scripts: Vec<CachedScript> = live
            .as_ref()
            .map(|l| cached.scripts(l).to_vec())
            .unwrap_or_default();
        live_scripts.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.path.cmp(&b.path)));
        let reset = pool.reset(plan.reset_wait)?;
        let live_dir = releases_dir.join(live.as_ref().map_or("", |l| l.as_str()));
        let budget = CompileBudget {
            deadline: started + plan.prewarm_time,
            slice: SLICE,
            reserve,
        };
        let rewarmed = pool.compile(&live_dir, &live_scripts, budget)?;
        report.restart = Some(PlannedRestart {
            wasted_memory: wasted,
            seconds: reset.settled_after,
            live: rewarmed,
        });
        to_warm = live_scripts;
    }

    if warm && !to_warm.is_empty() {
        let budget = CompileBudget {
            deadline: started + plan.prewarm_time,
            slice: SLICE,
            reserve,
        };
        let mut outcome = pool.compile(&releases_dir.join(release.as_str()), &to_warm, budget)?;
        if !restart {
            outcome.already_cached += already_cached;
        }
        if let Some(stop) = outcome.stopped {
            report.warnings.push(format!(
                "pre-warm stopped ({}) after compiling {} of {} scripts; the rest compile on their first request",
                match stop {
                    cutover_php::CompileStop::Deadline => "[refresh] prewarm_seconds passed",
                    cutover_php::CompileStop::Memory => "OPcache memory would have fallen below the reserve",
                    cutover_php::CompileStop::Keys => "opcache.max_accelerated_files reached",
                },
                outcome.compiled,
                to_warm.len()
            ));
        }
        if outcome.failed_count > 0 {
            report.warnings.push(format!(
                "{} scripts did not compile (they will not compile on a request either): {}",
                outcome.failed_count,
                outcome.failed.join(", ")
            ));
        }
        report.prewarm = Some(outcome);
    } else if warm {
        report.prewarm = Some(CompileOutcome {
            already_cached,
            ..CompileOutcome::default()
        });
    }
    // Asked again only when this changed it: a switch back and forth between two warm
    // releases (verify's flips) costs the pool one request.
    let compiled = report.prewarm.as_ref().is_some_and(|p| p.compiled > 0);
    let after = if report.invalidated > 0 || compiled || restart {
        ByRelease::ask(pool, &releases_dir)?
    } else {
        cached
    };
    report.cache = after.contents();
    *known = Some(after);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

impl WarmReport {
    /// A report that crossed the network is held to what a host could have said.
    pub fn check(&self) -> Result<(), String> {
        let text_ok = |t: &String| t.len() <= 4096;
        if self.warnings.len() > 16 || !self.warnings.iter().all(text_ok) {
            return Err("too many or too long warnings".into());
        }
        if !(self.seconds.is_finite() && self.seconds >= 0.0) {
            return Err(format!("{} seconds", self.seconds));
        }
        if let Some(prewarm) = &self.prewarm {
            if prewarm.failed.len() > 16 || !prewarm.failed.iter().all(text_ok) {
                return Err("too many failed scripts named".into());
            }
        }
        check_releases(&self.cache.releases)
    }
}

/// A list of cached releases that crossed the network is held to what a host could have
/// said: release ids, a bounded number of them.
pub fn check_releases(releases: &[ReleaseCache]) -> Result<(), String> {
    let named = |r: &ReleaseCache| ReleaseId::parse(&r.release).is_ok();
    if releases.len() > 100_000 || !releases.iter().all(named) {
        return Err("a cached release is not a release id".into());
    }
    Ok(())
}
