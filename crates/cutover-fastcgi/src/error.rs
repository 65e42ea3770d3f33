use std::fmt;
use std::io;
use std::time::Duration;

use crate::address::Address;
use crate::record::{ProtocolStatus, RecordType};

/// Which part of a request was under way when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    /// Writing BEGIN_REQUEST, PARAMS and STDIN.
    Send,
    /// Waiting for STDOUT, STDERR and END_REQUEST.
    Receive,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connecting",
            Phase::Send => "sending the request",
            Phase::Receive => "waiting for the response",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameOrValue {
    Name,
    Value,
}

impl fmt::Display for NameOrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameOrValue::Name => "name",
            NameOrValue::Value => "value",
        })
    }
}

/// The peer sent bytes that are not valid FastCGI (or not a valid CGI response).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a record has version {0}, but FastCGI has only version 1")]
    BadVersion(u8),
    #[error("unexpected {record_type} record for request id {request_id}")]
    UnexpectedRecord {
        record_type: RecordType,
        request_id: u16,
    },
    #[error("a record is for request id {got}, but the request in flight has id {expected}")]
    RequestIdMismatch { expected: u16, got: u16 },
    #[error("the server does not understand our {} (it answered FCGI_UNKNOWN_TYPE)", RecordType::from_u8(*.0))]
    UnknownTypeReply(u8),
    #[error("the {record_type} body is {len} bytes long; it must be 8")]
    BadBodyLength { record_type: RecordType, len: usize },
    #[error("a name-value pair declares a {which} of {declared} bytes, but only {available} bytes follow")]
    NameValueLength {
        which: NameOrValue,
        declared: usize,
        available: usize,
    },
    #[error("a name-value pair's {which} length is cut off")]
    TruncatedNameValueLength { which: NameOrValue },
    #[error("a name or value of {0} bytes is longer than FastCGI can carry (2^31 - 1)")]
    NameValueTooLong(usize),
    #[error("{0} bytes do not fit in one record (at most 65535)")]
    ContentTooLong(usize),
    #[error("malformed CGI response headers: {0}")]
    CgiHeaders(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{input}` is not a FastCGI address: {reason}")]
    InvalidAddress { input: String, reason: &'static str },

    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: Address,
        #[source]
        source: io::Error,
    },

    #[error("timed out after {} while {phase} ({addr})", seconds(.after))]
    Timeout {
        addr: Address,
        phase: Phase,
        after: Duration,
    },

    #[error("the connection to {addr} failed while {phase}: {source}")]
    Io {
        addr: Address,
        phase: Phase,
        #[source]
        source: io::Error,
    },

    #[error("{addr} closed the connection before ending the request ({})", received_text(*.stdout_bytes, .stderr))]
    ConnectionClosed {
        addr: Address,
        /// STDOUT bytes that had arrived.
        stdout_bytes: usize,
        /// STDERR that had arrived.
        stderr: String,
        /// A parameter whose name-value pair was too big for one record, if the request had one.
        oversized_param: Option<(String, usize)>,
    },

    #[error("{addr} broke the FastCGI protocol: {error}")]
    Protocol {
        addr: Address,
        #[source]
        error: ProtocolError,
    },

    #[error("{addr} refused the request: {status}")]
    Rejected {
        addr: Address,
        status: ProtocolStatus,
    },

    #[error("the response from {addr} is larger than the limit of {limit} bytes")]
    ResponseTooLarge { addr: Address, limit: usize },

    #[error("php-fpm at {addr} cannot open the script {script} (\"Primary script unknown\")")]
    ScriptNotFound {
        addr: Address,
        script: String,
        stderr: String,
    },

    #[error("php-fpm at {addr} cannot read the script {script} (\"Access denied.\"){}", stderr_text(.stderr))]
    ScriptNotReadable {
        addr: Address,
        script: String,
        stderr: String,
    },

    #[error(
        "php-fpm at {addr} may not open the script {script}: it is outside the pool's open_basedir"
    )]
    ScriptOutsideOpenBasedir {
        addr: Address,
        script: String,
        stderr: String,
    },

    #[error("php-fpm at {addr} refused to run {script} (\"Access denied.\" by security.limit_extensions)")]
    AccessDenied { addr: Address, script: String },

    #[error("{addr} answered 500 with an empty body for {script}{}", stderr_text(.stderr))]
    EmptyServerError {
        addr: Address,
        script: String,
        stderr: String,
    },
}

fn seconds(d: &Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn received_text(stdout_bytes: usize, stderr: &str) -> String {
    let mut text = format!("{stdout_bytes} bytes of output had arrived");
    if !stderr.is_empty() {
        text.push_str(&format!("; stderr: {}", stderr.trim_end()));
    }
    text
}

fn stderr_text(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", stderr.trim_end())
    }
}

impl Error {
    /// What the user can do about it, when we know.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Connect { addr, source } => connect_hint(addr, source)?,
            Error::Timeout { phase, .. } => match phase {
                Phase::Connect => {
                    "nothing answered the connection: is the host reachable, and is a firewall dropping it?".into()
                }
                Phase::Send => "the server stopped reading the request: every worker may be busy (pm.max_children), or the script did not read its input".into(),
                Phase::Receive => "the script ran longer than the timeout, or every worker of the pool was busy (pm.max_children); raise the timeout, or look at the pool's slowlog and status page".into(),
            },
            Error::Io { source, .. } if is_reset(source) => {
                "the worker went away mid-request: look in php-fpm's error log for a crash, request_terminate_timeout or pm.max_requests".into()
            }
            Error::ConnectionClosed {
                addr,
                stdout_bytes,
                oversized_param,
                ..
            } => {
                if let Some((name, len)) = oversized_param {
                    format!(
                        "the parameter {name} takes {len} bytes, more than one 64 KiB record; php-fpm drops any request whose name-value pair spans two records, so send it in the body instead"
                    )
                } else if *stdout_bytes == 0 && matches!(addr, Address::Tcp(_)) {
                    "php-fpm accepted the connection and closed it: if the pool sets listen.allowed_clients, this host must be in it; otherwise look in php-fpm's error log".into()
                } else {
                    "the worker may have crashed or been stopped (request_terminate_timeout, pm.max_requests, a segfault): look in php-fpm's error log".into()
                }
            }
            Error::Protocol { error, .. } => match error {
                ProtocolError::BadVersion(_) => "the server does not speak FastCGI: is this an HTTP port rather than php-fpm's `listen` address?".into(),
                ProtocolError::CgiHeaders(_) => "the script may print output before PHP sends its headers, or the server is not PHP".into(),
                _ => return None,
            },
            Error::Rejected { status, .. } => match status {
                ProtocolStatus::Overloaded => "the pool has no free worker and its backlog is full; wait and retry, or raise pm.max_children / listen.backlog".into(),
                ProtocolStatus::UnknownRole => "the server is not a FastCGI responder (php-fpm always is)".into(),
                _ => return None,
            },
            Error::ResponseTooLarge { .. } => {
                "raise the limit with Client::set_max_response_bytes if the output is expected".into()
            }
            Error::ScriptNotFound { script, .. } => format!(
                "php-fpm found no file it could reach at {script}: the path must exist as the pool sees it (inside its chroot if it has one; not in a /tmp that php-fpm under systemd has private, so put the script inside the deploy path), and the pool's user must be able to enter every directory above it"
            ),
            Error::ScriptNotReadable { script, .. } => format!(
                "the pool's user (its `user =`, often www-data) must be able to read {script}: make it world-readable or owned by that user"
            ),
            Error::ScriptOutsideOpenBasedir { script, stderr, .. } => match open_basedir_paths(stderr) {
                Some(paths) => format!(
                    "the pool's open_basedir allows only {paths}: put {script} inside one of them, e.g. inside the deploy path"
                ),
                None => format!(
                    "put {script} inside a directory of the pool's open_basedir, e.g. inside the deploy path"
                ),
            },
            Error::AccessDenied { script, .. } => format!(
                "the pool's security.limit_extensions (default: .php .phar) does not allow the extension of {script}: give the script a .php name"
            ),
            Error::EmptyServerError { .. } => {
                "a PHP fatal error with display_errors=Off answers an empty 500: the cause is in the stderr above or in the pool's error_log".into()
            }
            Error::InvalidAddress { .. } | Error::Io { .. } => return None,
        })
    }
}

/// The directories in PHP's "is not within the allowed path(s): (/a:/b)" warning.
fn open_basedir_paths(stderr: &str) -> Option<&str> {
    let start = stderr.find("allowed path(s): (")? + "allowed path(s): (".len();
    let len = stderr[start..].find(')')?;
    Some(&stderr[start..start + len])
}

pub(crate) fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

fn connect_hint(addr: &Address, source: &io::Error) -> Option<String> {
    use io::ErrorKind::*;
    Some(match (addr, source.kind()) {
        (Address::Unix(path), NotFound) => format!(
            "there is no socket at {}: is php-fpm running, and does the pool's `listen` name this path?",
            path.display()
        ),
        (Address::Unix(path), PermissionDenied) => format!(
            "this user may not open {}: php-fpm sets the socket's owner and mode from the pool's listen.owner, listen.group and listen.mode; run as that user or a member of listen.group, or change those settings",
            path.display()
        ),
        (Address::Unix(path), ConnectionRefused) => format!(
            "{} exists but nothing listens on it (left behind by a php-fpm that stopped?)",
            path.display()
        ),
        (Address::Tcp(_), ConnectionRefused) => {
            "nothing listens there: is php-fpm running, and is the pool's `listen` this host:port?".into()
        }
        (Address::Tcp(_), NotFound) => "the host name does not resolve".into(),
        _ => return None,
    })
}
