//! Errors as the user sees them, and their exit codes.
//!
//! A `CommandError` keeps the error it came from (its `Display` is the message, its
//! sources the "caused by" lines) and adds hints. It is made through a few constructors
//! and `From` impls, one per library error type.

use std::process::ExitCode;

use cutover_pipeline::{FleetError, HostError, HostErrorKind};

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1: the operation failed; every target is as it was (or as the message says).
    Failed,
    /// 2: bad input: arguments, cutover.toml, or a request a host refused.
    Usage,
    /// 70 (EX_SOFTWARE): a bug in cutover, or a host that broke the protocol's rules.
    Internal,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::Usage => 2,
            Kind::Internal => 70,
        }
    }
}

#[derive(Debug)]
pub struct CommandError {
    pub kind: Kind,
    pub message: String,
    pub causes: Vec<String>,
    pub hints: Vec<String>,
    /// Per-host reports, for `--json`, when hosts were contacted.
    pub hosts: Option<Box<serde_json::Value>>,
    /// What went wrong besides the error (a failed `on_failure` hook), said before it.
    pub warnings: Vec<String>,
}

impl CommandError {
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CommandError::new(Kind::Usage, message).with_hint(hint)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        CommandError::new(Kind::Failed, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        CommandError::new(Kind::Internal, message)
    }

    fn new(kind: Kind, message: impl Into<String>) -> Self {
        CommandError {
            kind,
            message: message.into(),
            causes: Vec::new(),
            hints: Vec::new(),
            hosts: None,
            warnings: Vec::new(),
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// "caused by:" lines, e.g. what a failed command printed on stderr.
    pub fn with_causes(mut self, causes: impl IntoIterator<Item = String>) -> Self {
        self.causes.extend(causes);
        self
    }

    pub fn with_hints(mut self, hints: impl IntoIterator<Item = String>) -> Self {
        self.hints.extend(hints);
        self
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind.exit_code())
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "error": {
                "message": self.message,
                "causes": self.causes,
                "hints": self.hints,
                "exit_code": self.kind.exit_code(),
            }
        });
        if let Some(hosts) = &self.hosts {
            doc["hosts"] = (**hosts).clone();
        }
        if !self.warnings.is_empty() {
            doc["warnings"] = serde_json::json!(self.warnings);
        }
        doc
    }
}

impl From<cutover_core::Error> for CommandError {
    fn from(error: cutover_core::Error) -> Self {
        HostError::from(error).into()
    }
}

impl From<cutover_git::Error> for CommandError {
    fn from(error: cutover_git::Error) -> Self {
        let kind = match error.kind() {
            cutover_git::ErrorKind::Usage => Kind::Usage,
            cutover_git::ErrorKind::Failed => Kind::Failed,
        };
        CommandError {
            causes: cutover_pipeline::cause_chain(&error),
            ..CommandError::new(kind, error.to_string())
        }
        .with_hints(error.hint())
    }
}

impl From<cutover_config::ConfigError> for CommandError {
    fn from(error: cutover_config::ConfigError) -> Self {
        CommandError::new(Kind::Usage, error.to_string())
            .with_hints(error.hint().map(str::to_string))
    }
}

impl From<cutover_refresh::RefreshError> for CommandError {
    fn from(error: cutover_refresh::RefreshError) -> Self {
        HostError::from(error).into()
    }
}

impl From<cutover_php::Error> for CommandError {
    fn from(error: cutover_php::Error) -> Self {
        HostError::from(error).into()
    }
}

/// Only a bad URL reaches a command's error; a webhook that fails is a warning.
impl From<cutover_notify::NotifyError> for CommandError {
    fn from(error: cutover_notify::NotifyError) -> Self {
        CommandError::usage(
            error.to_string(),
            "set `webhook = \"https://…\"` in the [notify] table of cutover.toml",
        )
    }
}

impl From<cutover_verify::Error> for CommandError {
    fn from(error: cutover_verify::Error) -> Self {
        use cutover_verify::Error;
        // Each comes from one flag of `verify`: the message names it.
        match error {
            Error::BadMarker { source, .. } => CommandError::usage(
                format!("--release-marker is not a valid regex: {source}"),
                "e.g. `release=(\\S+)`",
            ),
            Error::NotHttp { .. } | Error::NoHost { .. } | Error::BadUrl { .. } => {
                CommandError::usage(
                    format!("--url {error}"),
                    "request the app where it runs, e.g. `--url http://127.0.0.1/index.php`",
                )
            }
        }
    }
}

impl From<HostError> for CommandError {
    fn from(error: HostError) -> Self {
        CommandError {
            causes: error.causes,
            hints: error.hints,
            ..CommandError::new(kind_of(error.kind), error.message)
        }
    }
}

/// One host: that host's error, and what state it was left in. Several: what happened
/// across the fleet, each failed host's error as a cause.
impl From<FleetError> for CommandError {
    fn from(error: FleetError) -> Self {
        let kind = kind_of(error.kind);
        let hosts = serde_json::to_value(&error.hosts).ok().map(Box::new);
        let errors: Vec<(&str, &HostError)> = error.errors().collect();
        let next = error
            .next
            .unwrap_or("fix what is named above and run the command again");
        let mut command = match (error.hosts.len(), errors.as_slice()) {
            (1, [(_, host)]) => CommandError {
                causes: host.causes.clone(),
                hints: host.hints.clone(),
                ..CommandError::new(kind, &host.message)
            }
            .with_hint(format!("{}; {next}", error.state)),
            _ => CommandError {
                causes: errors
                    .iter()
                    .map(|(name, e)| format!("{name}: {}", e.one_line()))
                    .collect(),
                ..CommandError::new(kind, &error.summary)
            }
            .with_hints(
                errors
                    .iter()
                    .flat_map(|(name, e)| e.hints.iter().map(move |h| format!("{name}: {h}")))
                    .take(3),
            )
            .with_hint(format!("{}; {next}", error.state)),
        };
        command.hosts = hosts;
        let one = error.hosts.len() == 1;
        command.warnings = error
            .hosts
            .iter()
            .flat_map(|h| {
                h.warnings.iter().map(move |w| match one {
                    true => w.clone(),
                    false => format!("{}: {w}", h.host),
                })
            })
            .collect();
        command
    }
}

fn kind_of(kind: HostErrorKind) -> Kind {
    match kind {
        HostErrorKind::Usage => Kind::Usage,
        HostErrorKind::Failed => Kind::Failed,
        HostErrorKind::Internal => Kind::Internal,
    }
}

pub type Result<T, E = CommandError> = std::result::Result<T, E>;
