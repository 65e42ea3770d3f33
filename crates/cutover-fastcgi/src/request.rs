use std::borrow::Cow;
use std::path::Path;

use crate::error::ProtocolError;
use crate::nv;
use crate::record::{self, RecordType, Role, FLAG_KEEP_CONN, MAX_CONTENT_LEN};

/// A request to a FastCGI responder: the CGI parameters and the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// CGI/1.1 variables: SCRIPT_FILENAME, REQUEST_METHOD, QUERY_STRING, HTTP_* headers…
    pub params: Vec<(String, String)>,
    /// The request body, sent as FCGI_STDIN.
    pub stdin: Vec<u8>,
}

impl Request {
    /// A request with no parameters and no body, to fill with [`Request::param`].
    pub fn new() -> Request {
        Request::default()
    }

    /// A GET of `script_filename` — the path as the pool sees it, inside its chroot if it
    /// has one — with `query` (no leading `?`) as QUERY_STRING. It sets the variables a
    /// web server would, so scripts that read `$_SERVER` behave as behind nginx.
    pub fn get(script_filename: impl AsRef<Path>, query: &str) -> Request {
        let script_filename = script_filename.as_ref();
        let script = script_filename.to_string_lossy().into_owned();
        let name = script_filename
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let document_root = script_filename
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let uri = format!("/{name}");
        let request_uri = if query.is_empty() {
            uri.clone()
        } else {
            format!("{uri}?{query}")
        };
        let params = [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_SOFTWARE", "cutover"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "localhost"),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_PORT", "80"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("REMOTE_PORT", "0"),
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_FILENAME", &script),
            ("SCRIPT_NAME", &uri),
            ("DOCUMENT_URI", &uri),
            ("DOCUMENT_ROOT", &document_root),
            ("REQUEST_URI", &request_uri),
            ("QUERY_STRING", query),
        ];
        Request {
            params: params
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            stdin: Vec::new(),
        }
    }

    /// A POST of `body` to `script_filename`.
    pub fn post(script_filename: impl AsRef<Path>, content_type: &str, body: Vec<u8>) -> Request {
        Request::get(script_filename, "")
            .param("REQUEST_METHOD", "POST")
            .body(content_type, body)
    }

    /// Sets a parameter, replacing any with the same name.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        let name = name.into();
        let value = value.into();
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.params.push((name, value)),
        }
        self
    }

    /// Sets an HTTP request header: `User-Agent` becomes HTTP_USER_AGENT.
    pub fn header(self, name: &str, value: impl Into<String>) -> Request {
        let name: String = name
            .chars()
            .map(|c| match c {
                '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        self.param(format!("HTTP_{name}"), value)
    }

    /// Sets the body with its CONTENT_TYPE and CONTENT_LENGTH (PHP reads no more than
    /// CONTENT_LENGTH says).
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Request {
        let len = body.len().to_string();
        self.stdin = body;
        self.param("CONTENT_TYPE", content_type)
            .param("CONTENT_LENGTH", len)
    }

    /// The SCRIPT_FILENAME parameter, if set.
    pub fn script_filename(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == "SCRIPT_FILENAME")
            .map(|(_, v)| v.as_str())
    }

    /// The script for messages: SCRIPT_FILENAME, or a placeholder.
    pub(crate) fn script_for_messages(&self) -> Cow<'_, str> {
        match self.script_filename() {
            Some(script) => Cow::Borrowed(script),
            None => Cow::Borrowed("(no SCRIPT_FILENAME)"),
        }
    }

    /// The first parameter whose pair cannot fit in one record, with its encoded size.
    pub(crate) fn oversized_param(&self) -> Option<(String, usize)> {
        self.params.iter().find_map(|(name, value)| {
            let len = nv::encoded_len(name.len(), value.len());
            (len > MAX_CONTENT_LEN).then(|| (name.clone(), len))
        })
    }

    /// The whole request as bytes: BEGIN_REQUEST (responder, keep-conn), PARAMS, STDIN.
    pub fn encode(&self, request_id: u16) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::with_capacity(1024 + self.stdin.len() + self.stdin.len() / 8192);
        record::encode_record(
            &mut out,
            RecordType::BeginRequest,
            request_id,
            &record::begin_request_body(Role::Responder, FLAG_KEEP_CONN),
        )?;
        encode_params(&mut out, request_id, &self.params)?;
        record::encode_stream(&mut out, RecordType::Stdin, request_id, &self.stdin);
        Ok(out)
    }
}

/// Appends the PARAMS stream. Pairs are packed whole into records: php-fpm parses each
/// PARAMS record on its own and drops the connection when a pair spans two. Only a pair
/// larger than a record is split, as the spec allows.
pub fn encode_params(
    out: &mut Vec<u8>,
    request_id: u16,
    params: &[(String, String)],
) -> Result<(), ProtocolError> {
    let mut pending = Vec::new();
    for (name, value) in params {
        let pair_len = nv::encoded_len(name.len(), value.len());
        if !pending.is_empty() && pending.len() + pair_len > MAX_CONTENT_LEN {
            record::encode_record(out, RecordType::Params, request_id, &pending)?;
            pending.clear();
        }
        if pair_len > MAX_CONTENT_LEN {
            let mut pair = Vec::new();
            nv::encode_pair(&mut pair, name.as_bytes(), value.as_bytes())?;
            for chunk in pair.chunks(MAX_CONTENT_LEN) {
                record::encode_record(out, RecordType::Params, request_id, chunk)?;
            }
        } else {
            nv::encode_pair(&mut pending, name.as_bytes(), value.as_bytes())?;
        }
    }
    if !pending.is_empty() {
        record::encode_record(out, RecordType::Params, request_id, &pending)?;
    }
    record::encode_record(out, RecordType::Params, request_id, &[])
}
