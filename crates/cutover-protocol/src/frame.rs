//! Frames: `[kind: u8][length: u32 big-endian][payload]`. A reader refuses a frame larger
//! than its limit for that kind before allocating anything, so a hostile or corrupted peer
//! cannot make the other side buffer gigabytes.

use std::io::{self, Read, Write};

use crate::error::ProtocolError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One JSON message.
    Message,
    /// A chunk of the compressed content stream.
    Data,
    /// The content stream is complete.
    End,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Message => 1,
            Kind::Data => 2,
            Kind::End => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Message),
            2 => Some(Kind::Data),
            3 => Some(Kind::End),
            _ => None,
        }
    }
}

/// The largest payload accepted per kind.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub message: u32,
    pub data: u32,
}

impl Limits {
    /// A manifest of a large app (100k files) is ~20 MB of JSON; a data chunk is at most
    /// `DATA_CHUNK` compressed bytes (zstd never grows a chunk by more than a little).
    pub const DEFAULT: Limits = Limits {
        message: 64 << 20,
        data: 2 * DATA_CHUNK as u32,
    };

    fn for_kind(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Message => self.message,
            Kind::Data => self.data,
            Kind::End => 0,
        }
    }
}

/// The size content chunks are cut into.
pub const DATA_CHUNK: usize = 256 * 1024;

#[derive(Debug)]
pub struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
}

pub fn write_frame(w: &mut dyn Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame larger than 4 GiB"))?;
    let mut header = [0u8; 5];
    header[0] = kind.byte();
    header[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&header)?;
    w.write_all(payload)
}

/// Reads one frame. A stream that ends cleanly between frames is `Closed`; one that ends
/// inside a frame is `Truncated`.
pub fn read_frame(r: &mut dyn Read, limits: &Limits) -> Result<Frame, ProtocolError> {
    let mut header = [0u8; 5];
    let mut filled = 0;
    while filled < header.len() {
        match r.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(ProtocolError::Closed),
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e)),
        }
    }
    let kind = Kind::from_byte(header[0]).ok_or(ProtocolError::UnknownKind(header[0]))?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let limit = limits.for_kind(kind);
    if len > limit {
        return Err(ProtocolError::TooLarge {
            kind: format!("{kind:?}").to_lowercase(),
            len,
            limit,
        });
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => ProtocolError::Io(e),
    })?;
    Ok(Frame { kind, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn frames_round_trip(payloads in proptest::collection::vec(
            (0u8..3, proptest::collection::vec(any::<u8>(), 0..2000)), 0..20)
        ) {
            let kinds = [Kind::Message, Kind::Data, Kind::End];
            let mut wire = Vec::new();
            for (k, p) in &payloads {
                let p: &[u8] = if kinds[*k as usize] == Kind::End { &[] } else { p };
                write_frame(&mut wire, kinds[*k as usize], p).unwrap();
            }
            let mut r: &[u8] = &wire;
            for (k, p) in &payloads {
                let frame = read_frame(&mut r, &Limits::DEFAULT).unwrap();
                prop_assert_eq!(frame.kind, kinds[*k as usize]);
                if frame.kind != Kind::End {
                    prop_assert_eq!(&frame.payload, p);
                }
            }
            prop_assert!(matches!(read_frame(&mut r, &Limits::DEFAULT), Err(ProtocolError::Closed)));
        }

        #[test]
        fn garbage_never_panics_or_overallocates(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r: &[u8] = &bytes;
            let limits = Limits { message: 16, data: 16 };
            while read_frame(&mut r, &limits).is_ok() {}
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_before_reading_it() {
        let mut wire = vec![1u8];
        wire.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut r: &[u8] = &wire;
        let err = read_frame(&mut r, &Limits::DEFAULT).unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooLarge { len: u32::MAX, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated() {
        let mut wire = Vec::new();
        write_frame(&mut wire, Kind::Message, b"{\"a\":1}").unwrap();
        wire.truncate(wire.len() - 2);
        let mut r: &[u8] = &wire;
        assert!(matches!(
            read_frame(&mut r, &Limits::DEFAULT),
            Err(ProtocolError::Truncated)
        ));
        let mut r: &[u8] = &[7, 0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut r, &Limits::DEFAULT),
            Err(ProtocolError::UnknownKind(7))
        ));
    }
}
