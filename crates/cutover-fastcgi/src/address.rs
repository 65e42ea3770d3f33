use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;

/// Where a FastCGI server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A unix socket, e.g. `/run/php/php8.2-fpm.sock`.
    Unix(PathBuf),
    /// `host:port`, e.g. `127.0.0.1:9000` or `[::1]:9000`.
    Tcp(String),
}

impl Address {
    /// Reads the forms people copy from a php-fpm pool's `listen =` line or an nginx
    /// `fastcgi_pass`: `unix:/path`, `/path`, `./path`, `host:port`, and a bare port
    /// (which php-fpm binds on every interface; we connect to it on 127.0.0.1).
    pub fn parse(input: &str) -> Result<Address, Error> {
        let invalid = |reason: &'static str| Error::InvalidAddress {
            input: input.to_owned(),
            reason,
        };
        let text = input.trim();
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid("`unix:` needs a socket path after it"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') || text.starts_with("./") || text.starts_with("../") {
            return Ok(Address::Unix(PathBuf::from(text)));
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u16>() {
                Ok(port) if port != 0 => Ok(Address::Tcp(format!("127.0.0.1:{port}"))),
                _ => Err(invalid("the port must be between 1 and 65535")),
            };
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(invalid(
                "expected a socket path (unix:/run/php/php-fpm.sock) or host:port (127.0.0.1:9000)",
            ));
        };
        if host.is_empty() {
            return Err(invalid("the host before `:` is empty"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(invalid("an IPv6 host needs brackets: [::1]:9000"));
        }
        match port.parse::<u16>() {
            Ok(port) if port != 0 => Ok(Address::Tcp(text.to_owned())),
            _ => Err(invalid("the port must be a number between 1 and 65535")),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(host_port) => f.write_str(host_port),
        }
    }
}
