//! What is being deployed: a directory on the deploying machine. A host on this machine
//! stages straight from it; a remote host gets its manifest (or the delta against the
//! manifest it already has), computed once for all hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cutover_core::manifest::{self, Manifest};
use cutover_core::tree::Excludes;
use cutover_protocol::ManifestPayload;

use crate::HostError;

pub struct SourceTree {
    dir: PathBuf,
    excludes: Excludes,
    cache: ManifestCache,
    /// Made once, before hosts stage in parallel: scanning is parallel itself (rayon), and
    /// a lock held across it would deadlock a worker that steals another host's stage.
    prepared: OnceLock<Prepared>,
}

struct Prepared {
    manifest: Arc<Manifest>,
    /// Per base digest a host has (and the cache still holds): the delta against it.
    deltas: HashMap<String, ManifestPayload>,
}

impl SourceTree {
    pub fn new(dir: PathBuf, excludes: Excludes, cache: ManifestCache) -> Self {
        SourceTree {
            dir,
            excludes,
            cache,
            prepared: OnceLock::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn excludes(&self) -> &Excludes {
        &self.excludes
    }

    /// Scans the tree into its manifest (sparing the hashing of files whose size and mtime
    /// match a base the hosts have) and computes one delta per distinct base. Called once,
    /// by the orchestrator, outside any parallel step.
    pub fn prepare(&self, bases: &[Option<String>]) -> Result<(), HostError> {
        if self.prepared.get().is_some() {
            return Ok(());
        }
        let mut loaded: HashMap<String, Manifest> = HashMap::new();
        for digest in bases.iter().flatten() {
            if !loaded.contains_key(digest) {
                if let Some(base) = self.cache.load(digest) {
                    loaded.insert(digest.clone(), base);
                }
            }
        }
        let _span = tracing::info_span!("scan", dir = %self.dir.display()).entered();
        let manifest = manifest::scan(&self.dir, &self.excludes, loaded.values().next())?;
        let deltas = loaded
            .iter()
            .map(|(digest, base)| {
                (
                    digest.clone(),
                    ManifestPayload::Delta(manifest.delta_from(base)),
                )
            })
            .collect();
        let _ = self.prepared.set(Prepared {
            manifest: Arc::new(manifest),
            deltas,
        });
        Ok(())
    }

    /// The manifest, and what to send a host whose stored manifest has `base` as digest:
    /// the delta when this machine still has that base, else the full manifest.
    pub fn manifest_for(
        &self,
        base: Option<&str>,
    ) -> Result<(Arc<Manifest>, ManifestPayload), HostError> {
        let prepared = self
            .prepared
            .get()
            .ok_or_else(|| HostError::internal("the manifest was not prepared before staging"))?;
        let payload = base
            .and_then(|digest| prepared.deltas.get(digest))
            .cloned()
            .unwrap_or_else(|| ManifestPayload::Full((*prepared.manifest).clone()));
        Ok((Arc::clone(&prepared.manifest), payload))
    }

    /// Remembers the manifest that went out, so the next deploy sends a delta.
    pub fn remember(&self) {
        if let Some(prepared) = self.prepared.get() {
            self.cache.store(&prepared.manifest);
        }
    }
}

/// The last manifests sent from this machine, by digest, so the next deploy can send a
/// delta and skip hashing unchanged files. `$XDG_CACHE_HOME/cutover/manifests`.
pub struct ManifestCache {
    dir: Option<PathBuf>,
}

impl ManifestCache {
    const KEEP: usize = 8;

    /// The user's cache directory, from the environment.
    pub fn from_env() -> Self {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        ManifestCache {
            dir: base.map(|b| b.join("cutover").join("manifests")),
        }
    }

    fn load(&self, digest: &str) -> Option<Manifest> {
        // A digest names a file here: nothing else may reach the path.
        cutover_core::manifest::ContentHash::from_hex(digest)?;
        let path = self.dir.as_ref()?.join(format!("{digest}.manifest"));
        let (manifest, stored) = Manifest::load(&path).ok().flatten()?;
        (stored == digest).then_some(manifest)
    }

    /// Best effort: without a cache the next deploy sends a full manifest.
    fn store(&self, manifest: &Manifest) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(format!("{}.manifest", manifest.digest()));
        if manifest.store(&path).is_err() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        let excess = files.len().saturating_sub(Self::KEEP);
        for (_, path) in files.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}
