//! A small HTTP/1.1 GET client on std alone, for `http://127.0.0.1:<port>/...` URLs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::{Error, Result};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger bodies are refused: these are test pages, not downloads.
const MAX_BODY: usize = 64 << 20;

/// One HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names as sent; look them up with [`HttpResponse::header`].
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, lossily decoded as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `url` on a fresh connection (`Connection: close`) with a 10 s timeout for
/// connecting and for each read and write.
pub fn http_get(url: &str) -> Result<HttpResponse> {
    http_get_timeout(url, DEFAULT_TIMEOUT)
}

/// [`http_get`] with another timeout.
pub fn http_get_timeout(url: &str, timeout: Duration) -> Result<HttpResponse> {
    let fail = |message: String| Error::Http {
        url: url.to_string(),
        message,
    };
    let (addr, host, path) = parse_url(url).map_err(fail)?;
    let stream = open(addr, timeout).map_err(|e| fail(format!("connect {addr}: {e}")))?;
    let mut reader = BufReader::new(stream);
    send(reader.get_mut(), &host, &path, false).map_err(|e| fail(format!("send: {e}")))?;
    read_response(&mut reader)
        .map(|(response, _)| response)
        .map_err(fail)
}

/// A keep-alive connection for many GETs to one server, as a load generator needs.
///
/// When the server closes the connection (`Connection: close`, or an idle keep-alive
/// connection closed before the request got any answer) the next GET reconnects; a GET
/// that fails after the server started answering is an error, never retried.
pub struct HttpConnection {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    reader: Option<BufReader<TcpStream>>,
}

impl HttpConnection {
    /// Connects to the server of `url` (`http://host:port`, any path is ignored).
    pub fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let (addr, host, _) = parse_url(url).map_err(|message| Error::Http {
            url: url.to_string(),
            message,
        })?;
        let mut connection = HttpConnection {
            addr,
            host,
            timeout,
            reader: None,
        };
        connection.reader = Some(connection.open(url)?);
        Ok(connection)
    }

    /// GET `path` (starting with `/`) on the kept-alive connection.
    pub fn get(&mut self, path: &str) -> Result<HttpResponse> {
        let url = format!("http://{}{}", self.host, path);
        let fresh = self.reader.is_none();
        match self.try_get(path, &url) {
            Ok(response) => Ok(response),
            // The server may close an idle keep-alive connection at any time; a request
            // it never started answering is safe to send again on a new connection.
            Err(Attempt::NothingReceived(_)) if !fresh => {
                self.reader = None;
                self.try_get(path, &url).map_err(|a| a.into_error(&url))
            }
            Err(attempt) => {
                self.reader = None;
                Err(attempt.into_error(&url))
            }
        }
    }

    fn try_get(&mut self, path: &str, url: &str) -> Result<HttpResponse, Attempt> {
        if self.reader.is_none() {
            self.reader = Some(self.open(url).map_err(|e| Attempt::Failed(e.to_string()))?);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Err(Attempt::Failed("no connection".into()));
        };
        send(reader.get_mut(), &self.host, path, true)
            .map_err(|e| Attempt::NothingReceived(format!("send: {e}")))?;
        match reader.fill_buf() {
            Ok([]) => {
                return Err(Attempt::NothingReceived(
                    "connection closed before a response".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(Attempt::NothingReceived(format!("read: {e}")))
            }
            // A timeout means the server is stuck, not that it closed an idle connection.
            Err(e) => return Err(Attempt::Failed(format!("read: {e}"))),
        }
        let (response, keep_alive) = read_response(reader).map_err(Attempt::Failed)?;
        if !keep_alive {
            self.reader = None;
        }
        Ok(response)
    }

    fn open(&self, url: &str) -> Result<BufReader<TcpStream>> {
        open(self.addr, self.timeout)
            .map(BufReader::new)
            .map_err(|e| Error::Http {
                url: url.to_string(),
                message: format!("connect {}: {e}", self.addr),
            })
    }
}

enum Attempt {
    NothingReceived(String),
    Failed(String),
}

impl Attempt {
    fn into_error(self, url: &str) -> Error {
        let (Attempt::NothingReceived(message) | Attempt::Failed(message)) = self;
        Error::Http {
            url: url.to_string(),
            message,
        }
    }
}

fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Splits `http://host[:port][/path]` into a socket address, the Host header and the path.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// URLs are supported".to_string())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("no host in URL".into());
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("resolve {with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{with_port} resolves to no address"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

fn send(stream: &mut TcpStream, host: &str, path: &str, keep_alive: bool) -> std::io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cutover-teststack\r\n\
         Accept: */*\r\nConnection: {connection}\r\n\r\n"
    );
    stream.write_all(request.as_bytes())
}

/// Reads one response; also says whether the connection may be reused.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(HttpResponse, bool), String> {
    let status_line = read_line(reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;

    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed header line {line:?}"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let mut keep_alive = version == "HTTP/1.1"
        && !response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));

    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if status == 204 || status == 304 || (100..200).contains(&status) {
        // No body.
    } else if chunked {
        response.body = read_chunked(reader)?;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad Content-Length {length:?}"))?;
        if length > MAX_BODY {
            return Err(format!("body of {length} bytes is too large"));
        }
        response.body = vec![0; length];
        reader
            .read_exact(&mut response.body)
            .map_err(|e| format!("read body: {e}"))?;
    } else {
        reader
            .take(MAX_BODY as u64)
            .read_to_end(&mut response.body)
            .map_err(|e| format!("read body: {e}"))?;
        keep_alive = false;
    }
    Ok((response, keep_alive))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            // Trailers, then the empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err("chunked body too large".into());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(|e| format!("read chunk: {e}"))?;
        if !read_line(reader)?.is_empty() {
            return Err("chunk not followed by CRLF".into());
        }
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(64 * 1024)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed mid-response".into());
    }
    if line.last() != Some(&b'\n') {
        return Err("line too long or truncated".into());
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "non-UTF-8 header line".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let (addr, host, path) = parse_url("http://127.0.0.1:8080/a/b?c=d").unwrap();
        assert_eq!(addr.to_string(), "127.0.0.1:8080");
        assert_eq!(host, "127.0.0.1:8080");
        assert_eq!(path, "/a/b?c=d");
        let (addr, host, path) = parse_url("http://127.0.0.1").unwrap();
        assert_eq!(addr.port(), 80);
        assert_eq!(host, "127.0.0.1");
        assert_eq!(path, "/");
        assert!(parse_url("https://127.0.0.1/").is_err());
    }
}
