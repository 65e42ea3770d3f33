//! What `cutover verify` measures: bounded keep-alive load against a page while the
//! current release flips between two, and the verdict — failed and mixed requests,
//! latency, how long until every request showed the last release, and with assets, which
//! pages asked the other release for files it did not have.
//!
//! The flip itself is the caller's ([`Flip`]): this crate knows nothing about deploy paths,
//! locks or hosts, and prints nothing.

mod error;
mod html;
mod judge;
mod load;
mod marker;
mod page_url;
mod run;
mod stats;
mod verdict;

pub use error::Error;
pub use marker::Marker;
pub use page_url::PageUrl;
pub use run::{run, Flip, Scenario};
pub use verdict::{AssetExample, AssetVerdict, Latency, ReleaseCounts, Verdict};
