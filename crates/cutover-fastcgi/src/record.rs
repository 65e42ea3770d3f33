//! FastCGI 1.0 records: the 8-byte header, the fixed bodies, and a reader and writer for
//! record streams.
//!
//! Every length a peer sends is checked against the bytes actually there before anything is
//! allocated, so a hostile or confused peer can make a decode fail but never panic it or
//! make it reserve memory it did not send.

use std::fmt;
use std::io::{self, Read};

use crate::error::ProtocolError;

/// The only version FastCGI ever had.
pub const VERSION_1: u8 = 1;
/// Size of a record header.
pub const HEADER_LEN: usize = 8;
/// The largest content one record can carry (the length field has 16 bits).
pub const MAX_CONTENT_LEN: usize = 0xFFFF;
/// Management records (GET_VALUES, UNKNOWN_TYPE) use request id 0.
pub const NULL_REQUEST_ID: u16 = 0;
/// `flags` bit of BEGIN_REQUEST: keep the connection open after this request.
pub const FLAG_KEEP_CONN: u8 = 1;

/// The record types of FastCGI 1.0; any other byte is kept as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    BeginRequest,
    AbortRequest,
    EndRequest,
    Params,
    Stdin,
    Stdout,
    Stderr,
    Data,
    GetValues,
    GetValuesResult,
    UnknownType,
    Other(u8),
}

impl RecordType {
    pub fn from_u8(byte: u8) -> Self {
        match byte {
            1 => Self::BeginRequest,
            2 => Self::AbortRequest,
            3 => Self::EndRequest,
            4 => Self::Params,
            5 => Self::Stdin,
            6 => Self::Stdout,
            7 => Self::Stderr,
            8 => Self::Data,
            9 => Self::GetValues,
            10 => Self::GetValuesResult,
            11 => Self::UnknownType,
            other => Self::Other(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Self::BeginRequest => 1,
            Self::AbortRequest => 2,
            Self::EndRequest => 3,
            Self::Params => 4,
            Self::Stdin => 5,
            Self::Stdout => 6,
            Self::Stderr => 7,
            Self::Data => 8,
            Self::GetValues => 9,
            Self::GetValuesResult => 10,
            Self::UnknownType => 11,
            Self::Other(byte) => byte,
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::BeginRequest => "FCGI_BEGIN_REQUEST",
            Self::AbortRequest => "FCGI_ABORT_REQUEST",
            Self::EndRequest => "FCGI_END_REQUEST",
            Self::Params => "FCGI_PARAMS",
            Self::Stdin => "FCGI_STDIN",
            Self::Stdout => "FCGI_STDOUT",
            Self::Stderr => "FCGI_STDERR",
            Self::Data => "FCGI_DATA",
            Self::GetValues => "FCGI_GET_VALUES",
            Self::GetValuesResult => "FCGI_GET_VALUES_RESULT",
            Self::UnknownType => "FCGI_UNKNOWN_TYPE",
            Self::Other(byte) => return write!(f, "record type {byte}"),
        };
        f.write_str(name)
    }
}

/// The role a request asks the application to play. cutover only needs `Responder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Responder,
    Authorizer,
    Filter,
}

impl Role {
    pub fn as_u16(self) -> u16 {
        match self {
            Self::Responder => 1,
            Self::Authorizer => 2,
            Self::Filter => 3,
        }
    }
}

/// How the application ended a request (`protocolStatus` of END_REQUEST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolStatus {
    RequestComplete,
    CantMpxConn,
    Overloaded,
    UnknownRole,
    Other(u8),
}

impl ProtocolStatus {
    pub fn from_u8(byte: u8) -> Self {
        match byte {
            0 => Self::RequestComplete,
            1 => Self::CantMpxConn,
            2 => Self::Overloaded,
            3 => Self::UnknownRole,
            other => Self::Other(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Self::RequestComplete => 0,
            Self::CantMpxConn => 1,
            Self::Overloaded => 2,
            Self::UnknownRole => 3,
            Self::Other(byte) => byte,
        }
    }
}

impl fmt::Display for ProtocolStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RequestComplete => f.write_str("request complete (FCGI_REQUEST_COMPLETE)"),
            Self::CantMpxConn => f.write_str(
                "it cannot run a second request on a busy connection (FCGI_CANT_MPX_CONN)",
            ),
            Self::Overloaded => f.write_str("it is overloaded (FCGI_OVERLOADED)"),
            Self::UnknownRole => {
                f.write_str("it does not play the requested role (FCGI_UNKNOWN_ROLE)")
            }
            Self::Other(byte) => write!(f, "unknown protocol status {byte}"),
        }
    }
}

/// A record header as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub record_type: RecordType,
    pub request_id: u16,
    pub content_length: u16,
    pub padding_length: u8,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [id_hi, id_lo] = self.request_id.to_be_bytes();
        let [len_hi, len_lo] = self.content_length.to_be_bytes();
        [
            self.version,
            self.record_type.as_u8(),
            id_hi,
            id_lo,
            len_hi,
            len_lo,
            self.padding_length,
            0,
        ]
    }

    /// Reads the fields without judging them; [`Header::check`] does that.
    pub fn decode(bytes: [u8; HEADER_LEN]) -> Self {
        Header {
            version: bytes[0],
            record_type: RecordType::from_u8(bytes[1]),
            request_id: u16::from_be_bytes([bytes[2], bytes[3]]),
            content_length: u16::from_be_bytes([bytes[4], bytes[5]]),
            padding_length: bytes[6],
        }
    }

    pub fn check(&self) -> Result<(), ProtocolError> {
        if self.version != VERSION_1 {
            return Err(ProtocolError::BadVersion(self.version));
        }
        Ok(())
    }
}

/// One record with its content (padding dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub record_type: RecordType,
    pub request_id: u16,
    pub content: Vec<u8>,
}

/// The padding that aligns a record's content to 8 bytes — unless that would take content
/// plus padding past 65535. php-fpm drops the connection when `contentLength +
/// paddingLength > 65535` on a PARAMS or first record, so a full 65535-byte record goes
/// out unpadded (the spec makes padding optional).
pub fn padding_for(content_len: usize) -> u8 {
    let padding = (8 - content_len % 8) % 8;
    if content_len + padding > MAX_CONTENT_LEN {
        0
    } else {
        padding as u8
    }
}

/// Appends one record. Content longer than 65535 bytes is refused, not split: use
/// [`encode_stream`] for that.
pub fn encode_record(
    out: &mut Vec<u8>,
    record_type: RecordType,
    request_id: u16,
    content: &[u8],
) -> Result<(), ProtocolError> {
    let content_length =
        u16::try_from(content.len()).map_err(|_| ProtocolError::ContentTooLong(content.len()))?;
    let padding_length = padding_for(content.len());
    let header = Header {
        version: VERSION_1,
        record_type,
        request_id,
        content_length,
        padding_length,
    };
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(content);
    out.resize(out.len() + usize::from(padding_length), 0);
    Ok(())
}

/// Appends a whole stream (PARAMS, STDIN, STDOUT, ...): the data cut into records of at
/// most 65535 bytes, then the empty record that ends the stream.
pub fn encode_stream(out: &mut Vec<u8>, record_type: RecordType, request_id: u16, data: &[u8]) {
    for chunk in data.chunks(MAX_CONTENT_LEN) {
        // Chunks are at most MAX_CONTENT_LEN long, which encode_record accepts.
        let _ = encode_record(out, record_type, request_id, chunk);
    }
    let _ = encode_record(out, record_type, request_id, &[]);
}

/// The body of BEGIN_REQUEST.
pub fn begin_request_body(role: Role, flags: u8) -> [u8; 8] {
    let [hi, lo] = role.as_u16().to_be_bytes();
    [hi, lo, flags, 0, 0, 0, 0, 0]
}

/// The body of END_REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRequest {
    pub app_status: u32,
    pub protocol_status: ProtocolStatus,
}

impl EndRequest {
    pub fn encode(&self) -> [u8; 8] {
        let [a, b, c, d] = self.app_status.to_be_bytes();
        [a, b, c, d, self.protocol_status.as_u8(), 0, 0, 0]
    }

    pub fn decode(content: &[u8]) -> Result<Self, ProtocolError> {
        match content {
            [a, b, c, d, status, _, _, _] => Ok(EndRequest {
                app_status: u32::from_be_bytes([*a, *b, *c, *d]),
                protocol_status: ProtocolStatus::from_u8(*status),
            }),
            _ => Err(ProtocolError::BadBodyLength {
                record_type: RecordType::EndRequest,
                len: content.len(),
            }),
        }
    }
}

/// The record type named in an UNKNOWN_TYPE body.
pub fn decode_unknown_type(content: &[u8]) -> Result<u8, ProtocolError> {
    match content {
        [record_type, _, _, _, _, _, _, _] => Ok(*record_type),
        _ => Err(ProtocolError::BadBodyLength {
            record_type: RecordType::UnknownType,
            len: content.len(),
        }),
    }
}

/// Decodes the first record of `buf`. `Ok(None)` means `buf` holds only part of a record;
/// `Ok(Some((record, used)))` gives the record and how many bytes it took, padding
/// included. The content is copied only once it is known to be all there.
pub fn decode_record(buf: &[u8]) -> Result<Option<(Record, usize)>, ProtocolError> {
    let Some(header_bytes) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = Header::decode(*header_bytes);
    header.check()?;
    let content_end = HEADER_LEN + usize::from(header.content_length);
    let record_end = content_end + usize::from(header.padding_length);
    let Some(content) = buf.get(HEADER_LEN..content_end) else {
        return Ok(None);
    };
    if buf.len() < record_end {
        return Ok(None);
    }
    let record = Record {
        record_type: header.record_type,
        request_id: header.request_id,
        content: content.to_vec(),
    };
    Ok(Some((record, record_end)))
}

/// Why reading a record from a stream failed.
#[derive(Debug)]
pub enum ReadError {
    /// The stream failed (including a read timeout).
    Io(io::Error),
    /// The peer closed the stream in the middle of a record.
    Truncated,
    /// The bytes are not a FastCGI record.
    Protocol(ProtocolError),
}

/// Reads records one at a time from a byte stream.
pub struct RecordReader<R> {
    inner: R,
}

impl<R: Read> RecordReader<R> {
    pub fn new(inner: R) -> Self {
        RecordReader { inner }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next record, or `Ok(None)` when the peer closed the stream between records.
    pub fn read_record(&mut self) -> Result<Option<Record>, ReadError> {
        let mut header_bytes = [0u8; HEADER_LEN];
        match read_full(&mut self.inner, &mut header_bytes)? {
            0 => return Ok(None),
            HEADER_LEN => {}
            _ => return Err(ReadError::Truncated),
        }
        let header = Header::decode(header_bytes);
        header.check().map_err(ReadError::Protocol)?;

        // The buffer grows with the bytes that arrive (at most 64 KiB), never from the
        // declared length alone.
        let mut content = Vec::new();
        let wanted = u64::from(header.content_length);
        let got = (&mut self.inner)
            .take(wanted)
            .read_to_end(&mut content)
            .map_err(ReadError::Io)?;
        if got as u64 != wanted {
            return Err(ReadError::Truncated);
        }
        let mut padding = [0u8; 255];
        let padding = &mut padding[..usize::from(header.padding_length)];
        if read_full(&mut self.inner, padding)? != padding.len() {
            return Err(ReadError::Truncated);
        }
        Ok(Some(Record {
            record_type: header.record_type,
            request_id: header.request_id,
            content,
        }))
    }
}

/// Like `read_exact`, but says how much arrived before end of file instead of failing.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(filled)
}
