//! FastCGI name-value pairs (the content of PARAMS, GET_VALUES and GET_VALUES_RESULT).
//!
//! Each length takes one byte when it is below 128, otherwise four bytes with the high bit
//! of the first one set, which leaves 31 bits.

use crate::error::{NameOrValue, ProtocolError};

/// One decoded name-value pair, as bytes (FastCGI does not say they are text).
pub type Pair = (Vec<u8>, Vec<u8>);

/// The longest name or value the 31-bit length can describe.
pub const MAX_LEN: usize = 0x7FFF_FFFF;

fn len_size(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        4
    }
}

/// How many bytes [`encode_pair`] appends for a name and a value of these lengths.
pub fn encoded_len(name_len: usize, value_len: usize) -> usize {
    len_size(name_len) + len_size(value_len) + name_len + value_len
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        // Callers checked len <= MAX_LEN, so the top bit is free for the marker.
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// Appends one pair. Fails only when a name or value is longer than 2^31 - 1 bytes.
pub fn encode_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), ProtocolError> {
    for len in [name.len(), value.len()] {
        if len > MAX_LEN {
            return Err(ProtocolError::NameValueTooLong(len));
        }
    }
    out.reserve(encoded_len(name.len(), value.len()));
    push_len(out, name.len());
    push_len(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    Ok(())
}

/// Encodes all pairs, one after the other.
pub fn encode_pairs<'a, I, N, V>(pairs: I) -> Result<Vec<u8>, ProtocolError>
where
    I: IntoIterator<Item = &'a (N, V)>,
    N: AsRef<[u8]> + 'a,
    V: AsRef<[u8]> + 'a,
{
    let mut out = Vec::new();
    for (name, value) in pairs {
        encode_pair(&mut out, name.as_ref(), value.as_ref())?;
    }
    Ok(out)
}

fn read_len(buf: &[u8], pos: &mut usize, which: NameOrValue) -> Result<usize, ProtocolError> {
    let Some(&first) = buf.get(*pos) else {
        return Err(ProtocolError::TruncatedNameValueLength { which });
    };
    if first < 0x80 {
        *pos += 1;
        return Ok(usize::from(first));
    }
    let Some(bytes) = buf.get(*pos..).and_then(|rest| rest.first_chunk::<4>()) else {
        return Err(ProtocolError::TruncatedNameValueLength { which });
    };
    *pos += 4;
    Ok((u32::from_be_bytes(*bytes) & 0x7FFF_FFFF) as usize)
}

/// Decodes a whole buffer of pairs. A length that claims more bytes than follow is an
/// error, found before anything is copied, so the memory used is bounded by `buf`.
pub fn decode_pairs(buf: &[u8]) -> Result<Vec<Pair>, ProtocolError> {
    let mut pairs = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let name_len = read_len(buf, &mut pos, NameOrValue::Name)?;
        let value_len = read_len(buf, &mut pos, NameOrValue::Value)?;
        let available = buf.len() - pos;
        if name_len > available {
            return Err(ProtocolError::NameValueLength {
                which: NameOrValue::Name,
                declared: name_len,
                available,
            });
        }
        if value_len > available - name_len {
            return Err(ProtocolError::NameValueLength {
                which: NameOrValue::Value,
                declared: value_len,
                available: available - name_len,
            });
        }
        let name = buf[pos..pos + name_len].to_vec();
        pos += name_len;
        let value = buf[pos..pos + value_len].to_vec();
        pos += value_len;
        pairs.push((name, value));
    }
    Ok(pairs)
}
