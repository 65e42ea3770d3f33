use std::borrow::Cow;

use crate::address::Address;
use crate::cgi;
use crate::error::{Error, ProtocolError};
use crate::request::Request;

/// What the script answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// From the CGI `Status:` header; 200 when the script sent none.
    pub status: u16,
    /// The CGI headers in the order sent, without `Status`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Everything the application wrote to FCGI_STDERR (in php-fpm: `error_log()` and
    /// logged PHP errors, not `fwrite(STDERR, …)`).
    pub stderr: String,
    /// `appStatus` of END_REQUEST: the script's exit status.
    pub app_status: u32,
}

impl Response {
    /// Builds a response from the raw STDOUT and STDERR streams.
    pub fn from_streams(
        mut stdout: Vec<u8>,
        stderr: &[u8],
        app_status: u32,
    ) -> Result<Response, ProtocolError> {
        let (head, body_start) = cgi::parse_head(&stdout)?;
        stdout.drain(..body_start);
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body: stdout,
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            app_status,
        })
    }

    /// The first header with this name, ignoring case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Turns php-fpm's own refusals, which arrive as ordinary responses, into errors that
    /// say what happened.
    pub(crate) fn into_checked(self, addr: &Address, request: &Request) -> Result<Response, Error> {
        let script = || request.script_for_messages().into_owned();
        // When php-fpm cannot open the script itself, fpm_main.c answers 404 or 403 with a
        // fixed body and says why on FCGI_STDERR.
        let unopenable = self.stderr.contains("Unable to open primary script");
        if self.status == 404 && unopenable && self.stderr.contains("open_basedir restriction") {
            return Err(Error::ScriptOutsideOpenBasedir {
                addr: addr.clone(),
                script: script(),
                stderr: self.stderr,
            });
        }
        if self.status == 404 && self.stderr.contains("Primary script unknown") {
            return Err(Error::ScriptNotFound {
                addr: addr.clone(),
                script: script(),
                stderr: self.stderr,
            });
        }
        if self.status == 403 && unopenable {
            return Err(Error::ScriptNotReadable {
                addr: addr.clone(),
                script: script(),
                stderr: self.stderr,
            });
        }
        if self.status == 403
            && (self.stderr.contains("security.limit_extensions")
                || self.body == b"Access denied.\n")
        {
            return Err(Error::AccessDenied {
                addr: addr.clone(),
                script: script(),
            });
        }
        if self.status == 500 && self.body.is_empty() {
            return Err(Error::EmptyServerError {
                addr: addr.clone(),
                script: script(),
                stderr: self.stderr,
            });
        }
        Ok(self)
    }
}
