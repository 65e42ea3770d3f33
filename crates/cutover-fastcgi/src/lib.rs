//! A small blocking FastCGI 1.0 client, enough to run a script in a php-fpm pool the way
//! a web server would: over a unix socket or TCP, with timeouts, several requests on one
//! kept connection, the CGI response parsed, STDERR captured, and php-fpm's classic
//! refusals ("Primary script unknown", "Access denied.") turned into errors with hints.
//!
//! ```no_run
//! use std::time::Duration;
//! use cutover_fastcgi::{Address, Client, Request};
//!
//! let addr: Address = "unix:/run/php/php8.2-fpm.sock".parse()?;
//! let mut client = Client::connect(&addr, Duration::from_secs(5))?;
//! let response = client.request(&Request::get("/srv/app/current/public/health.php", ""))?;
//! println!("{} {}", response.status, response.body_text());
//! # Ok::<(), cutover_fastcgi::Error>(())
//! ```
//!
//! # What php-fpm does that the spec does not say
//!
//! - It parses each FCGI_PARAMS record on its own, so a name-value pair must not span two
//!   records (the spec allows it); a pair bigger than one record cannot reach it at all.
//!   The encoder packs whole pairs per record, and the error names an oversized one.
//! - It drops the connection when content plus padding exceed 65535 bytes, so a full
//!   record goes out unpadded.
//! - A kept connection holds its worker until it closes: the worker waits on it and
//!   accepts nothing else.
//! - FCGI_GET_VALUES is answered with FCGI_MPXS_CONNS=0 only (FCGI_MAX_CONNS and
//!   FCGI_MAX_REQS are never set), and the connection is closed afterwards.
//! - FCGI_STDERR carries `error_log()` and logged PHP errors, joined by "; " into one
//!   record per request; `php://stderr` goes to the worker's fd 2 (php-fpm's log), and the
//!   `STDERR` constant does not exist.
//! - A script it cannot open is answered with a fixed body, and the reason on FCGI_STDERR:
//!   404 and "Primary script unknown" when it does not exist or a directory above it cannot
//!   be entered; 403 "Access denied." and "Unable to open primary script … (Permission
//!   denied)" when it cannot be read; 404 "No input file specified." and an open_basedir
//!   warning outside open_basedir; 403 "Access denied." and a security.limit_extensions
//!   line for a wrong extension.
//!
//! The lower layers are public for other uses and for tests: [`record`] (the wire format),
//! [`nv`] (name-value pairs) and [`cgi`] (the CGI response head).

mod address;
pub mod cgi;
mod client;
mod error;
pub mod nv;
pub mod record;
mod request;
mod response;

pub use address::Address;
pub use client::{get_values, Client, Timeouts, DEFAULT_MAX_RESPONSE_BYTES};
pub use error::{Error, NameOrValue, Phase, ProtocolError};
pub use request::{encode_params, Request};
pub use response::Response;
