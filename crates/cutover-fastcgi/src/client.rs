use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::error::{is_reset, Error, Phase, ProtocolError};
use crate::nv;
use crate::record::{
    self, EndRequest, ProtocolStatus, ReadError, Record, RecordReader, RecordType, NULL_REQUEST_ID,
};
use crate::request::Request;
use crate::response::Response;

/// Requests go one at a time, so one id is enough; 0 is reserved for management records.
const REQUEST_ID: u16 = 1;

/// A response bigger than this is refused unless the caller raises the limit.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// How long each phase of a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a TCP connection. (Connecting to a unix socket does not wait.)
    pub connect: Duration,
    /// Writing the whole request.
    pub send: Duration,
    /// From the end of sending to END_REQUEST: the whole response, however it trickles in.
    pub receive: Duration,
}

impl Timeouts {
    /// The same bound for every phase.
    pub fn all(timeout: Duration) -> Timeouts {
        Timeouts {
            connect: timeout,
            send: timeout,
            receive: timeout,
        }
    }
}

/// A connection to a FastCGI server that runs requests one after another, keeping the
/// connection open between them (FCGI_KEEP_CONN).
///
/// php-fpm gives a kept connection a worker of its own until the connection closes, so
/// drop the client when done rather than keeping it idle.
pub struct Client {
    addr: Address,
    timeouts: Timeouts,
    max_response_bytes: usize,
    conn: Option<Connection>,
}

struct Connection {
    stream: Stream,
    /// Requests this connection has answered. A reused connection may have been closed by
    /// the server in the meantime (pm.max_requests), which justifies one retry.
    served: u32,
}

impl Client {
    /// Connects now, so that an unreachable server is reported here.
    pub fn connect(addr: &Address, timeout: Duration) -> Result<Client, Error> {
        Client::connect_with(addr, Timeouts::all(timeout))
    }

    pub fn connect_with(addr: &Address, timeouts: Timeouts) -> Result<Client, Error> {
        let stream = Stream::connect(addr, timeouts.connect)?;
        Ok(Client {
            addr: addr.clone(),
            timeouts,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            conn: Some(Connection { stream, served: 0 }),
        })
    }

    pub fn address(&self) -> &Address {
        &self.addr
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// The most STDOUT plus STDERR one response may carry.
    pub fn set_max_response_bytes(&mut self, limit: usize) {
        self.max_response_bytes = limit;
    }

    /// Runs a request and returns the response, except for php-fpm's own refusals, which
    /// become errors with hints: script not found, not readable, outside open_basedir,
    /// extension not allowed by security.limit_extensions, and an empty 500 (a fatal error).
    pub fn request(&mut self, request: &Request) -> Result<Response, Error> {
        self.request_raw(request)?.into_checked(&self.addr, request)
    }

    /// Runs a request and returns whatever the server answered, 404s and 500s included.
    ///
    /// After a failure the connection is dropped and the next request opens a new one.
    /// When a reused connection ends before the first byte of the answer (as when php-fpm's
    /// pm.max_requests recycled the worker between two requests), the request is sent once
    /// more on a fresh connection — so a script that kills its worker before any output can
    /// run twice.
    pub fn request_raw(&mut self, request: &Request) -> Result<Response, Error> {
        let bytes = request
            .encode(REQUEST_ID)
            .map_err(|error| Error::Protocol {
                addr: self.addr.clone(),
                error,
            })?;
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = match self.exchange(&conn, &bytes, request) {
            Err(failure) if failure.stale && conn.served > 0 => {
                conn = self.open()?;
                self.exchange(&conn, &bytes, request)
            }
            other => other,
        };
        match result {
            Ok(response) => {
                conn.served += 1;
                self.conn = Some(conn);
                Ok(response)
            }
            Err(failure) => Err(failure.error),
        }
    }

    fn open(&self) -> Result<Connection, Error> {
        let stream = Stream::connect(&self.addr, self.timeouts.connect)?;
        Ok(Connection { stream, served: 0 })
    }

    fn exchange(
        &self,
        conn: &Connection,
        bytes: &[u8],
        request: &Request,
    ) -> Result<Response, Failure> {
        send(&conn.stream, &self.addr, bytes, self.timeouts.send)?;
        let deadline = Instant::now() + self.timeouts.receive;
        let mut reader = RecordReader::new(DeadlineIo::new(&conn.stream, deadline));
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut records = 0usize;
        let addr = &self.addr;
        loop {
            let closed = |stale: bool, stdout: &[u8], stderr: &[u8]| Failure {
                error: Error::ConnectionClosed {
                    addr: addr.clone(),
                    stdout_bytes: stdout.len(),
                    stderr: String::from_utf8_lossy(stderr).into_owned(),
                    oversized_param: request.oversized_param(),
                },
                stale,
            };
            let record = match reader.read_record() {
                Ok(Some(record)) => record,
                Ok(None) => return Err(closed(records == 0, &stdout, &stderr)),
                Err(ReadError::Truncated) => return Err(closed(false, &stdout, &stderr)),
                Err(ReadError::Io(e)) if is_reset(&e) => {
                    return Err(closed(records == 0, &stdout, &stderr))
                }
                Err(ReadError::Io(e)) => {
                    return Err(io_failure(addr, Phase::Receive, self.timeouts.receive, e))
                }
                Err(ReadError::Protocol(error)) => return Err(protocol(addr, error)),
            };
            records += 1;
            check_request_id(&record, REQUEST_ID).map_err(|e| protocol(addr, e))?;
            match record.record_type {
                RecordType::Stdout => stdout.extend_from_slice(&record.content),
                RecordType::Stderr => stderr.extend_from_slice(&record.content),
                RecordType::EndRequest => {
                    let end = EndRequest::decode(&record.content).map_err(|e| protocol(addr, e))?;
                    if end.protocol_status != ProtocolStatus::RequestComplete {
                        return Err(Failure::new(Error::Rejected {
                            addr: addr.clone(),
                            status: end.protocol_status,
                        }));
                    }
                    return Response::from_streams(stdout, &stderr, end.app_status)
                        .map_err(|e| protocol(addr, e));
                }
                record_type => {
                    return Err(protocol(
                        addr,
                        ProtocolError::UnexpectedRecord {
                            record_type,
                            request_id: record.request_id,
                        },
                    ))
                }
            }
            if stdout.len() + stderr.len() > self.max_response_bytes {
                return Err(Failure::new(Error::ResponseTooLarge {
                    addr: addr.clone(),
                    limit: self.max_response_bytes,
                }));
            }
        }
    }
}

/// Asks the server for management variables such as FCGI_MAX_CONNS, FCGI_MAX_REQS and
/// FCGI_MPXS_CONNS (FCGI_GET_VALUES). Names the server does not know are left out of the
/// answer. php-fpm closes the connection after answering, so this uses one of its own.
pub fn get_values(
    addr: &Address,
    names: &[&str],
    timeout: Duration,
) -> Result<HashMap<String, String>, Error> {
    let pairs: Vec<(&str, &str)> = names.iter().map(|name| (*name, "")).collect();
    let protocol_error = |error| Error::Protocol {
        addr: addr.clone(),
        error,
    };
    let content = nv::encode_pairs(&pairs).map_err(protocol_error)?;
    let mut bytes = Vec::new();
    record::encode_record(&mut bytes, RecordType::GetValues, NULL_REQUEST_ID, &content)
        .map_err(protocol_error)?;

    let stream = Stream::connect(addr, timeout)?;
    send(&stream, addr, &bytes, timeout).map_err(|f| f.error)?;
    let mut reader = RecordReader::new(DeadlineIo::new(&stream, Instant::now() + timeout));
    let closed = || Error::ConnectionClosed {
        addr: addr.clone(),
        stdout_bytes: 0,
        stderr: String::new(),
        oversized_param: None,
    };
    let record = match reader.read_record() {
        Ok(Some(record)) => record,
        Ok(None) | Err(ReadError::Truncated) => return Err(closed()),
        Err(ReadError::Io(e)) if is_reset(&e) => return Err(closed()),
        Err(ReadError::Io(e)) => return Err(io_failure(addr, Phase::Receive, timeout, e).error),
        Err(ReadError::Protocol(error)) => return Err(protocol_error(error)),
    };
    check_request_id(&record, NULL_REQUEST_ID).map_err(protocol_error)?;
    if record.record_type != RecordType::GetValuesResult {
        return Err(protocol_error(ProtocolError::UnexpectedRecord {
            record_type: record.record_type,
            request_id: record.request_id,
        }));
    }
    let values = nv::decode_pairs(&record.content).map_err(protocol_error)?;
    Ok(values
        .into_iter()
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            )
        })
        .collect())
}

/// Records for another request, and management records, have no place in a response.
fn check_request_id(record: &Record, expected: u16) -> Result<(), ProtocolError> {
    if record.request_id == expected {
        return Ok(());
    }
    if record.request_id == NULL_REQUEST_ID {
        if record.record_type == RecordType::UnknownType {
            return Err(ProtocolError::UnknownTypeReply(
                record::decode_unknown_type(&record.content)?,
            ));
        }
        return Err(ProtocolError::UnexpectedRecord {
            record_type: record.record_type,
            request_id: record.request_id,
        });
    }
    Err(ProtocolError::RequestIdMismatch {
        expected,
        got: record.request_id,
    })
}

/// A failed exchange, and whether it failed only because the server had already closed
/// a kept connection (then the request never ran, and a retry is safe).
struct Failure {
    error: Error,
    stale: bool,
}

impl Failure {
    fn new(error: Error) -> Failure {
        Failure {
            error,
            stale: false,
        }
    }
}

fn protocol(addr: &Address, error: ProtocolError) -> Failure {
    Failure::new(Error::Protocol {
        addr: addr.clone(),
        error,
    })
}

fn send(stream: &Stream, addr: &Address, bytes: &[u8], timeout: Duration) -> Result<(), Failure> {
    let mut io = DeadlineIo::new(stream, Instant::now() + timeout);
    io.write_all(bytes)
        .and_then(|()| io.flush())
        .map_err(|e| io_failure(addr, Phase::Send, timeout, e))
}

fn io_failure(addr: &Address, phase: Phase, after: Duration, e: io::Error) -> Failure {
    if is_timeout(&e) {
        return Failure::new(Error::Timeout {
            addr: addr.clone(),
            phase,
            after,
        });
    }
    Failure {
        stale: phase == Phase::Send && is_reset(&e),
        error: Error::Io {
            addr: addr.clone(),
            phase,
            source: e,
        },
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn connect(addr: &Address, timeout: Duration) -> Result<Stream, Error> {
        let connect_error = |source| Error::Connect {
            addr: addr.clone(),
            source,
        };
        match addr {
            Address::Unix(path) => UnixStream::connect(path)
                .map(Stream::Unix)
                .map_err(connect_error),
            Address::Tcp(host_port) => {
                let candidates = host_port.to_socket_addrs().map_err(connect_error)?;
                let mut last_error = io::Error::new(
                    io::ErrorKind::NotFound,
                    "the host name resolves to no address",
                );
                for candidate in candidates {
                    match TcpStream::connect_timeout(&candidate, timeout) {
                        Ok(stream) => {
                            // Requests are written whole; nothing is gained by delaying
                            // the small records of a kept connection.
                            let _ = stream.set_nodelay(true);
                            return Ok(Stream::Tcp(stream));
                        }
                        Err(e) => last_error = e,
                    }
                }
                if is_timeout(&last_error) {
                    return Err(Error::Timeout {
                        addr: addr.clone(),
                        phase: Phase::Connect,
                        after: timeout,
                    });
                }
                Err(connect_error(last_error))
            }
        }
    }
}

/// Reads and writes on a stream so that all calls together end by one deadline: each call
/// gets only the time that is left, so a server that trickles bytes cannot stretch it.
struct DeadlineIo<'a> {
    stream: &'a Stream,
    deadline: Instant,
}

impl<'a> DeadlineIo<'a> {
    fn new(stream: &'a Stream, deadline: Instant) -> Self {
        DeadlineIo { stream, deadline }
    }

    fn time_left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl Read for DeadlineIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = Some(self.time_left()?);
        match self.stream {
            Stream::Unix(s) => {
                s.set_read_timeout(left)?;
                (&*s).read(buf)
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(left)?;
                (&*s).read(buf)
            }
        }
    }
}

impl Write for DeadlineIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = Some(self.time_left()?);
        match self.stream {
            Stream::Unix(s) => {
                s.set_write_timeout(left)?;
                (&*s).write(buf)
            }
            Stream::Tcp(s) => {
                s.set_write_timeout(left)?;
                (&*s).write(buf)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
