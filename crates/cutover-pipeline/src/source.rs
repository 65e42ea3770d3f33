//! What is being deployed: a directory on the deploying machine. A host on this machine
//! stages straight from it; a remote host gets its manifest (or the delta against the
//! manifest it already has), computed once for all hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cutover_core::manifest::{self, Manifest};
use cutover_core::tree::Excludes;
use cutover_protocol::ManifestPayload;

use crate::HostError;

pub struct SourceTree {
    dir: PathBuf,
    excludes: Excludes,
    cache: ManifestCache,
    scanned: Mutex<Option<Arc<Manifest>>>,
    /// Per base digest the hosts have: that manifest, read from the cache once (`None`:
    /// not in the cache), and the delta to send against it.
    bases: Mutex<HashMap<String, Option<Arc<Manifest>>>>,
    deltas: Mutex<HashMap<String, Arc<ManifestPayload>>>,
}

impl SourceTree {
    pub fn new(dir: PathBuf, excludes: Excludes, cache: ManifestCache) -> Self {
        SourceTree {
            dir,
            excludes,
            cache,
            scanned: Mutex::new(None),
            bases: Mutex::new(HashMap::new()),
            deltas: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn excludes(&self) -> &Excludes {
        &self.excludes
    }

    /// The manifest, and what to send a host whose stored manifest has `base` as digest.
    /// The first call scans (sparing the hashing of files whose size and mtime match its
    /// base); the rest reuse it. One delta per distinct base, not per host.
    pub fn manifest_for(
        &self,
        base: Option<&str>,
    ) -> Result<(Arc<Manifest>, ManifestPayload), HostError> {
        let base_manifest = match base {
            Some(digest) => {
                let mut bases = self.bases.lock().map_err(|_| poisoned())?;
                bases
                    .entry(digest.to_string())
                    .or_insert_with(|| self.cache.load(digest).map(Arc::new))
                    .clone()
            }
            None => None,
        };
        let manifest = {
            let mut scanned = self.scanned.lock().map_err(|_| poisoned())?;
            match &*scanned {
                Some(manifest) => Arc::clone(manifest),
                None => {
                    let _span = tracing::info_span!("scan", dir = %self.dir.display()).entered();
                    let known = base_manifest.as_deref();
                    let manifest = Arc::new(manifest::scan(&self.dir, &self.excludes, known)?);
                    *scanned = Some(Arc::clone(&manifest));
                    manifest
                }
            }
        };
        let payload = match (base, base_manifest) {
            (Some(digest), Some(base)) => {
                let mut deltas = self.deltas.lock().map_err(|_| poisoned())?;
                let delta = deltas.entry(digest.to_string()).or_insert_with(|| {
                    Arc::new(ManifestPayload::Delta(manifest.delta_from(&base)))
                });
                (**delta).clone()
            }
            _ => ManifestPayload::Full((*manifest).clone()),
        };
        Ok((manifest, payload))
    }

    /// Remembers the manifest that went out, so the next deploy sends a delta.
    pub fn remember(&self) {
        if let Ok(scanned) = self.scanned.lock() {
            if let Some(manifest) = &*scanned {
                self.cache.store(manifest);
            }
        }
    }
}

fn poisoned() -> HostError {
    HostError::internal("a thread staging another host panicked")
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
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.dir.as_ref()?.join(format!("{digest}.json"));
        let manifest = Manifest::load(&path).ok().flatten()?;
        (manifest.digest() == digest).then_some(manifest)
    }

    /// Best effort: without a cache the next deploy sends a full manifest.
    fn store(&self, manifest: &Manifest) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(format!("{}.json", manifest.digest()));
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
