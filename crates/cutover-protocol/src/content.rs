//! The file bytes a host asked for, as one zstd stream cut into `Data` frames and closed
//! by an `End` frame. The receiver knows each file's size from the manifest, so the stream
//! needs no per-file framing.

use std::io::{self, Read, Write};

use crate::frame::{read_frame, write_frame, Kind, Limits, DATA_CHUNK};

/// Cuts what is written into `Data` frames.
struct Chunker<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
}

impl Write for Chunker<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = DATA_CHUNK - self.buf.len();
        let n = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == DATA_CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_chunk()?;
        self.out.flush()
    }
}

impl Chunker<'_> {
    fn flush_chunk(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_frame(self.out, Kind::Data, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Compresses everything written into it onto `out`; `finish` closes the stream.
pub struct ContentWriter<'a> {
    encoder: zstd::stream::write::Encoder<'static, Chunker<'a>>,
}

impl<'a> ContentWriter<'a> {
    pub fn new(out: &'a mut dyn Write) -> io::Result<Self> {
        let chunker = Chunker {
            out,
            buf: Vec::with_capacity(DATA_CHUNK),
        };
        Ok(ContentWriter {
            encoder: zstd::stream::write::Encoder::new(chunker, 3)?,
        })
    }

    pub fn finish(self) -> io::Result<()> {
        let mut chunker = self.encoder.finish()?;
        chunker.flush_chunk()?;
        write_frame(chunker.out, Kind::End, &[])?;
        chunker.out.flush()
    }
}

impl Write for ContentWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.encoder.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reassembles `Data` frames until `End`.
struct Frames<'a> {
    input: &'a mut dyn Read,
    limits: Limits,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for Frames<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            let frame = read_frame(self.input, &self.limits).map_err(|e| {
                let kind = if e.is_disconnect() {
                    io::ErrorKind::UnexpectedEof
                } else {
                    io::ErrorKind::InvalidData
                };
                io::Error::new(kind, e)
            })?;
            match frame.kind {
                Kind::Data => {
                    self.chunk = frame.payload;
                    self.pos = 0;
                }
                Kind::End => self.ended = true,
                Kind::Message => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a message arrived inside the content stream",
                    ))
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The decompressed content stream.
pub struct ContentReader<'a> {
    decoder: zstd::stream::read::Decoder<'static, io::BufReader<Frames<'a>>>,
}

impl<'a> ContentReader<'a> {
    pub fn new(input: &'a mut dyn Read, limits: Limits) -> io::Result<Self> {
        let frames = Frames {
            input,
            limits,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
        };
        Ok(ContentReader {
            decoder: zstd::stream::read::Decoder::new(frames)?,
        })
    }

    /// Reads to the `End` frame; more content than the receiver consumed is an error (the
    /// sender and the receiver disagree about what was asked for).
    pub fn finish(mut self) -> io::Result<()> {
        let mut extra = [0u8; 1];
        if self.decoder.read(&mut extra)? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the content stream holds more bytes than were asked for",
            ));
        }
        let mut frames = self.decoder.finish();
        let mut rest = Vec::new();
        frames.read_to_end(&mut rest)?;
        Ok(())
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trips_and_is_followed_by_the_next_frame() {
        let mut wire = Vec::new();
        let data: Vec<u8> = (0..1_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut writer = ContentWriter::new(&mut wire).unwrap();
        writer.write_all(&data).unwrap();
        writer.finish().unwrap();
        write_frame(&mut wire, Kind::Message, b"next").unwrap();
        assert!(wire.len() < data.len() / 4, "compressed to {}", wire.len());

        let mut input: &[u8] = &wire;
        let mut reader = ContentReader::new(&mut input, Limits::DEFAULT).unwrap();
        let mut back = vec![0u8; data.len()];
        reader.read_exact(&mut back).unwrap();
        reader.finish().unwrap();
        assert_eq!(back, data);
        let next = read_frame(&mut input, &Limits::DEFAULT).unwrap();
        assert_eq!(next.payload, b"next");
    }

    #[test]
    fn leftover_content_is_an_error() {
        let mut wire = Vec::new();
        let mut writer = ContentWriter::new(&mut wire).unwrap();
        writer.write_all(b"abcdef").unwrap();
        writer.finish().unwrap();
        let mut input: &[u8] = &wire;
        let mut reader = ContentReader::new(&mut input, Limits::DEFAULT).unwrap();
        let mut three = [0u8; 3];
        reader.read_exact(&mut three).unwrap();
        assert!(reader.finish().is_err());
    }
}
