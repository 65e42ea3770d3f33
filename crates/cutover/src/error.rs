//! Errors as the user sees them, and their exit codes.

use std::process::ExitCode;

/// 1: the operation failed and the target is as it was. 2: usage or configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failed,
    Usage,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::Usage => 2,
        }
    }
}

#[derive(Debug)]
pub struct CommandError {
    pub kind: Kind,
    pub message: String,
    pub causes: Vec<String>,
    pub hints: Vec<String>,
}

impl CommandError {
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CommandError {
            kind: Kind::Usage,
            message: message.into(),
            causes: Vec::new(),
            hints: vec![hint.into()],
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind.exit_code())
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "causes": self.causes,
                "hints": self.hints,
                "exit_code": self.kind.exit_code(),
            }
        })
    }
}

impl From<cutover_core::Error> for CommandError {
    fn from(error: cutover_core::Error) -> Self {
        let kind = match error.kind() {
            cutover_core::ErrorKind::Usage => Kind::Usage,
            cutover_core::ErrorKind::Failed => Kind::Failed,
        };
        // The io error's text is already in the message; repeating it as a cause is noise.
        let causes = match error {
            cutover_core::Error::Io { .. } => Vec::new(),
            _ => cause_chain(&error),
        };
        CommandError {
            kind,
            message: error.to_string(),
            causes,
            hints: error.hint().into_iter().collect(),
        }
    }
}

impl From<cutover_config::ConfigError> for CommandError {
    fn from(error: cutover_config::ConfigError) -> Self {
        CommandError {
            kind: Kind::Usage,
            message: error.to_string(),
            causes: Vec::new(),
            hints: error.hint().map(str::to_string).into_iter().collect(),
        }
    }
}

impl From<cutover_php::Error> for CommandError {
    fn from(error: cutover_php::Error) -> Self {
        CommandError::failed(&error, error.hint())
    }
}

impl From<cutover_php::reload::ReloadError> for CommandError {
    fn from(error: cutover_php::reload::ReloadError) -> Self {
        CommandError::failed(&error, error.hint())
    }
}

impl From<cutover_php::apache::GracefulError> for CommandError {
    fn from(error: cutover_php::apache::GracefulError) -> Self {
        CommandError::failed(&error, error.hint())
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

impl CommandError {
    /// An operation failed (exit 1): the error, its causes, and what to do.
    fn failed(error: &dyn std::error::Error, hint: Option<String>) -> Self {
        CommandError {
            kind: Kind::Failed,
            message: error.to_string(),
            causes: cause_chain(error),
            hints: hint.into_iter().collect(),
        }
    }
}

/// The messages of `error`'s sources, outermost first.
fn cause_chain(error: &dyn std::error::Error) -> Vec<String> {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes
}

pub type Result<T, E = CommandError> = std::result::Result<T, E>;
