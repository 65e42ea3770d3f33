//! Errors of one host, and of a fleet as a whole.
//!
//! A host's error may have crossed the network from its agent, so it is plain data
//! (message, causes, hints) rather than a source chain.

use cutover_protocol::Failure;
use serde::Serialize;

use crate::state::HostReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostErrorKind {
    /// Bad input: the host refused what it was asked (exit 2).
    Usage,
    /// The operation failed; the host is as it was (exit 1).
    Failed,
    /// The host or the connection broke a rule of the protocol, or a bug.
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    pub kind: HostErrorKind,
    pub message: String,
    pub causes: Vec<String>,
    pub hints: Vec<String>,
}

impl HostError {
    pub fn failed(message: impl Into<String>) -> Self {
        HostError {
            kind: HostErrorKind::Failed,
            message: message.into(),
            causes: Vec::new(),
            hints: Vec::new(),
        }
    }

    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        HostError {
            kind: HostErrorKind::Usage,
            message: message.into(),
            causes: Vec::new(),
            hints: vec![hint.into()],
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        HostError {
            kind: HostErrorKind::Internal,
            ..HostError::failed(message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Everything on one line, for a table cell.
    pub fn one_line(&self) -> String {
        let mut text = self.message.clone();
        for cause in &self.causes {
            text.push_str("; ");
            text.push_str(cause);
        }
        text
    }

    pub fn to_failure(&self) -> Failure {
        Failure {
            message: self.message.clone(),
            causes: self.causes.clone(),
            hints: self.hints.clone(),
            usage: self.kind == HostErrorKind::Usage,
        }
    }

    pub fn from_failure(failure: Failure) -> Self {
        HostError {
            kind: if failure.usage {
                HostErrorKind::Usage
            } else {
                HostErrorKind::Failed
            },
            message: failure.message,
            causes: failure.causes,
            hints: failure.hints,
        }
    }
}

/// The messages of `error`'s sources, outermost first.
pub fn cause_chain(error: &dyn std::error::Error) -> Vec<String> {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes
}

impl From<cutover_core::Error> for HostError {
    fn from(error: cutover_core::Error) -> Self {
        let kind = match error.kind() {
            cutover_core::ErrorKind::Usage => HostErrorKind::Usage,
            cutover_core::ErrorKind::Failed => HostErrorKind::Failed,
        };
        // The io error's text is already in the message; repeating it as a cause is noise.
        let causes = match error {
            cutover_core::Error::Io { .. } => Vec::new(),
            _ => cause_chain(&error),
        };
        HostError {
            kind,
            message: error.to_string(),
            causes,
            hints: error.hint().into_iter().collect(),
        }
    }
}

impl From<cutover_refresh::RefreshError> for HostError {
    fn from(error: cutover_refresh::RefreshError) -> Self {
        HostError {
            kind: match error.kind() {
                cutover_refresh::ErrorKind::Usage => HostErrorKind::Usage,
                cutover_refresh::ErrorKind::Failed => HostErrorKind::Failed,
            },
            message: error.to_string(),
            causes: cause_chain(&error),
            hints: error.hint().into_iter().collect(),
        }
    }
}

impl From<cutover_php::Error> for HostError {
    fn from(error: cutover_php::Error) -> Self {
        HostError {
            kind: HostErrorKind::Failed,
            message: error.to_string(),
            causes: cause_chain(&error),
            hints: error.hint().into_iter().collect(),
        }
    }
}

/// A fleet operation that did not complete: what state it left, and each host's report.
#[derive(Debug)]
pub struct FleetError {
    pub kind: HostErrorKind,
    /// What happened across the fleet, e.g. "staging failed on a host; no host was switched".
    pub summary: String,
    /// What the user can rely on now, e.g. "v1 is live again on every host".
    pub state: String,
    /// What to do next, when it is not to fix the error and run the command again.
    ///
    /// One of a few fixed sentences, so the error stays small enough to return by value.
    pub next: Option<&'static str>,
    /// The release the command was about, once it was chosen (a notification names it).
    pub release: Option<cutover_core::ReleaseId>,
    pub hosts: Vec<HostReport>,
}

impl FleetError {
    /// Names the release the failed command was about.
    pub(crate) fn about(mut self, release: &cutover_core::ReleaseId) -> Self {
        self.release = Some(release.clone());
        self
    }

    /// The failed hosts' errors.
    pub fn errors(&self) -> impl Iterator<Item = (&str, &HostError)> {
        self.hosts
            .iter()
            .filter_map(|h| Some((h.host.as_str(), h.error.as_ref()?)))
    }
}

impl std::fmt::Display for FleetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for FleetError {}
