//! Just enough FastCGI to ask a private pool whether it is up and to run a script in it.
//!
//! This is deliberately independent of cutover's own FastCGI client, so tests of that
//! client have a second opinion that does not share its bugs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::fpm::FastcgiTarget;
use crate::{Error, Result};

const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
const REQUEST_ID: u16 = 1;

/// What the pool answered to one request.
#[derive(Clone, Debug, Default)]
pub struct FcgiResponse {
    /// The CGI response: headers, a blank line, the body.
    pub stdout: Vec<u8>,
    /// What PHP wrote to FastCGI stderr (warnings when `error_log` is unset).
    pub stderr: Vec<u8>,
    /// The application status from the END_REQUEST record.
    pub app_status: u32,
}

impl FcgiResponse {
    /// The body after the CGI headers, lossily decoded.
    pub fn body(&self) -> String {
        let text = String::from_utf8_lossy(&self.stdout);
        match text.split_once("\r\n\r\n") {
            Some((_, body)) => body.to_string(),
            None => text.into_owned(),
        }
    }

    /// The CGI `Status` header's code, 200 when there is none.
    pub fn status(&self) -> u16 {
        let text = String::from_utf8_lossy(&self.stdout);
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("status"))
            .and_then(|(_, value)| value.split_whitespace().next()?.parse().ok())
            .unwrap_or(200)
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(target: &FastcgiTarget, timeout: Duration) -> std::io::Result<Box<dyn Stream>> {
    match target {
        FastcgiTarget::Unix(path) => {
            let stream = UnixStream::connect(path)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            Ok(Box::new(stream))
        }
        FastcgiTarget::Tcp(addr) => {
            let stream = TcpStream::connect_timeout(addr, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            Ok(Box::new(stream))
        }
    }
}

fn record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
    for chunk in content
        .chunks(0xffff)
        .chain(content.is_empty().then_some(&[][..]))
    {
        let len = chunk.len() as u16;
        let padding = (8 - chunk.len() % 8) % 8;
        out.extend_from_slice(&[VERSION, kind]);
        out.extend_from_slice(&REQUEST_ID.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&[padding as u8, 0]);
        out.extend_from_slice(chunk);
        out.extend(std::iter::repeat_n(0, padding));
    }
}

fn name_value_length(out: &mut Vec<u8>, len: usize) {
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// Sends one RESPONDER request with `params` and no body, reads until END_REQUEST.
pub(crate) fn request(
    target: &FastcgiTarget,
    params: &[(&str, &str)],
    timeout: Duration,
) -> Result<FcgiResponse> {
    let fail = |message: String| Error::Fastcgi {
        target: target.to_string(),
        message,
    };
    let mut stream = connect(target, timeout).map_err(|e| fail(format!("connect: {e}")))?;

    let mut out = Vec::new();
    let mut begin = RESPONDER.to_be_bytes().to_vec();
    begin.extend_from_slice(&[0; 6]);
    record(&mut out, BEGIN_REQUEST, &begin);
    let mut encoded = Vec::new();
    for (name, value) in params {
        name_value_length(&mut encoded, name.len());
        name_value_length(&mut encoded, value.len());
        encoded.extend_from_slice(name.as_bytes());
        encoded.extend_from_slice(value.as_bytes());
    }
    if !encoded.is_empty() {
        record(&mut out, PARAMS, &encoded);
    }
    record(&mut out, PARAMS, &[]);
    record(&mut out, STDIN, &[]);
    stream
        .write_all(&out)
        .map_err(|e| fail(format!("send request: {e}")))?;

    let mut response = FcgiResponse::default();
    loop {
        let mut header = [0u8; 8];
        stream
            .read_exact(&mut header)
            .map_err(|e| fail(format!("read record header: {e}")))?;
        if header[0] != VERSION {
            return Err(fail(format!("record version {} is not 1", header[0])));
        }
        let len = u16::from_be_bytes([header[4], header[5]]) as usize;
        let padding = header[6] as usize;
        let mut content = vec![0u8; len + padding];
        stream
            .read_exact(&mut content)
            .map_err(|e| fail(format!("read record body: {e}")))?;
        content.truncate(len);
        match header[1] {
            STDOUT => response.stdout.extend_from_slice(&content),
            STDERR => response.stderr.extend_from_slice(&content),
            END_REQUEST => {
                if content.len() < 8 {
                    return Err(fail("END_REQUEST record shorter than 8 bytes".into()));
                }
                response.app_status =
                    u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
                if content[4] != 0 {
                    return Err(fail(format!("protocol status {}", content[4])));
                }
                return Ok(response);
            }
            other => return Err(fail(format!("unexpected record type {other}"))),
        }
    }
}
