//! What can be wrong with what verify was asked to measure.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{url}` is not an http:// URL")]
    NotHttp { url: String },
    #[error("`{url}` names no host")]
    NoHost { url: String },
    #[error("`{url}` is not a valid URL: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("the release marker `{pattern}` is not a valid regex: {source}")]
    BadMarker {
        pattern: String,
        #[source]
        source: regex::Error,
    },
}
