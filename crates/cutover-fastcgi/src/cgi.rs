//! The CGI response a FastCGI responder writes to STDOUT: header lines, a blank line, the
//! body. Lines may end in CRLF or in a bare LF (both occur in the wild).

use crate::error::ProtocolError;

/// The header section of a CGI response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiHead {
    /// From the `Status:` header; 200 when there is none.
    pub status: u16,
    /// Every other header, in order, names as sent.
    pub headers: Vec<(String, String)>,
}

/// Splits STDOUT into its headers and the offset where the body starts.
pub fn parse_head(stdout: &[u8]) -> Result<(CgiHead, usize), ProtocolError> {
    if stdout.is_empty() {
        return Err(malformed("the response is empty: no headers, no body"));
    }
    let mut status = None;
    let mut headers = Vec::new();
    let mut pos = 0;
    loop {
        let Some(newline) = stdout[pos..].iter().position(|&b| b == b'\n') else {
            return Err(malformed(
                "the headers never end: no blank line before the end of the response",
            ));
        };
        let raw_line = &stdout[pos..pos + newline];
        pos += newline + 1;
        let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(malformed(format!(
                "header line `{}` has no colon",
                excerpt(line)
            )));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(malformed(format!(
                "header line `{}` has an invalid name",
                excerpt(line)
            )));
        }
        let value = trim_whitespace(&line[colon + 1..]);
        if value.iter().any(|&b| b == b'\r' || b == 0) {
            return Err(malformed(format!(
                "header `{}` has a control character in its value",
                excerpt(name)
            )));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        if name.eq_ignore_ascii_case("status") {
            if status.is_some() {
                return Err(malformed("two Status headers"));
            }
            status = Some(parse_status(&value)?);
        } else {
            headers.push((name, value));
        }
    }
    Ok((
        CgiHead {
            status: status.unwrap_or(200),
            headers,
        },
        pos,
    ))
}

/// `Status: 404 Not Found` or `Status: 404`.
fn parse_status(value: &str) -> Result<u16, ProtocolError> {
    let code = value.split(' ').next().unwrap_or_default();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) && !code.starts_with('0') {
        if let Ok(code) = code.parse::<u16>() {
            return Ok(code);
        }
    }
    Err(malformed(format!(
        "Status header `{}` does not start with a three-digit code",
        excerpt(value.as_bytes())
    )))
}

/// Writes a CGI head the way [`parse_head`] reads it (used by tests and fake servers).
pub fn encode_head(head: &CgiHead, line_end: &str) -> Vec<u8> {
    let mut out = String::new();
    if head.status != 200 {
        out.push_str(&format!("Status: {}{line_end}", head.status));
    }
    for (name, value) in &head.headers {
        out.push_str(&format!("{name}: {value}{line_end}"));
    }
    out.push_str(line_end);
    out.into_bytes()
}

/// The characters RFC 9110 allows in a header name.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if bytes.len() > MAX {
        format!("{text}…")
    } else {
        text
    }
}

fn malformed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::CgiHeaders(reason.into())
}
