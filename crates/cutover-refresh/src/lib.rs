//! Making PHP see the release `current` now names, and checking that it does.
//!
//! The switch is atomic on disk, but OPcache is keyed by the unresolved path and each
//! worker caches realpaths: without a refresh, `$document_root` setups keep serving the
//! old release. A health probe then asks the app itself which release answers, because a
//! stale OPcache answers 200 too.
//!
//! Two steps, on purpose: a [`RefreshSpec`] is resolved once from cutover.toml on the
//! deploying machine (and checked again where it arrives, since it crosses the network to
//! an agent); a [`Refresher`] is prepared from it on the host itself, where the pid files
//! and the pool live, before anything is switched.

mod error;
mod health;
mod refresher;
mod spec;
mod warm;

pub use cutover_php::ReleaseCache;
pub use error::{ErrorKind, RefreshError};
pub use health::{HealthCheck, HealthReport};
pub use refresher::{RefreshReport, RefreshStep, Refresher};
pub use spec::{HealthSpec, PoolSpec, RefreshSpec};
pub use warm::{cached_releases, check_releases, CacheContents, RoomCheck, WarmReport};
