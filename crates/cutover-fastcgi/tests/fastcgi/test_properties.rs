//! Property tests: encoders and decoders round-trip, and decoders fed arbitrary bytes
//! neither panic nor allocate beyond what they were given.

use std::io::{Cursor, Write};

use cutover_fastcgi::cgi::{self, CgiHead};
use cutover_fastcgi::record::{
    self, Header, ReadError, Record, RecordReader, RecordType, HEADER_LEN, MAX_CONTENT_LEN,
};
use cutover_fastcgi::{encode_params, nv, Client, Request, Response};
use proptest::prelude::*;

use crate::alloc::peak_bytes;
use crate::fake::{drain, read_request, FakeServer};
use crate::support::TIMEOUT;

/// Lengths that matter: the 1-byte/4-byte boundary at 128 and the 65535 record size.
fn interesting_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..40,
        4 => 120usize..136,
        1 => 65_520usize..65_545,
        1 => 70_000usize..70_010,
    ]
}

/// Bytes of a given length: random when short, a seeded pattern when long (cheap to make).
fn bytes(len: impl Strategy<Value = usize>) -> impl Strategy<Value = Vec<u8>> {
    (len, any::<u8>(), any::<u8>()).prop_flat_map(|(len, seed, step)| {
        if len <= 300 {
            prop::collection::vec(any::<u8>(), len).boxed()
        } else {
            let pattern: Vec<u8> = (0..len)
                .map(|i| seed.wrapping_add((i as u8).wrapping_mul(step | 1)))
                .collect();
            Just(pattern).boxed()
        }
    })
}

fn decode_all(mut buf: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    while !buf.is_empty() {
        let (record, used) = record::decode_record(buf).unwrap().unwrap();
        records.push(record);
        buf = &buf[used..];
    }
    records
}

/// The header of every record in an encoded stream.
fn headers(mut buf: &[u8]) -> Vec<Header> {
    let mut headers = Vec::new();
    while !buf.is_empty() {
        let header = Header::decode(*buf.first_chunk::<HEADER_LEN>().unwrap());
        let len =
            HEADER_LEN + usize::from(header.content_length) + usize::from(header.padding_length);
        headers.push(header);
        buf = &buf[len..];
    }
    headers
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn name_value_pairs_round_trip(
        pairs in prop::collection::vec((bytes(interesting_len()), bytes(interesting_len())), 0..5)
    ) {
        let encoded = nv::encode_pairs(&pairs).unwrap();
        let expected_len: usize = pairs.iter().map(|(n, v)| nv::encoded_len(n.len(), v.len())).sum();
        prop_assert_eq!(encoded.len(), expected_len);
        prop_assert_eq!(nv::decode_pairs(&encoded).unwrap(), pairs.clone());
        if let Some((name, _)) = pairs.first() {
            // One byte below 128, four with the high bit set from 128 on.
            prop_assert_eq!(encoded[0] & 0x80 != 0, name.len() >= 128);
        }
    }

    #[test]
    fn record_streams_round_trip_in_records_of_at_most_65535(
        data in bytes(prop_oneof![0usize..300, 65_530usize..65_540, 100_000usize..200_000]),
        type_byte in any::<u8>(),
        request_id in any::<u16>(),
    ) {
        let record_type = RecordType::from_u8(type_byte);
        let mut encoded = Vec::new();
        record::encode_stream(&mut encoded, record_type, request_id, &data);

        let records = decode_all(&encoded);
        let expected_records = data.len().div_ceil(MAX_CONTENT_LEN) + 1;
        prop_assert_eq!(records.len(), expected_records);
        for (i, record) in records.iter().enumerate() {
            prop_assert_eq!(record.record_type, record_type);
            prop_assert_eq!(record.request_id, request_id);
            if i + 2 < records.len() {
                prop_assert_eq!(record.content.len(), MAX_CONTENT_LEN);
            }
        }
        prop_assert!(records.last().unwrap().content.is_empty());
        let joined: Vec<u8> = records.iter().flat_map(|r| r.content.clone()).collect();
        prop_assert_eq!(&joined, &data);

        for header in headers(&encoded) {
            let padded = usize::from(header.content_length) + usize::from(header.padding_length);
            prop_assert!(padded <= MAX_CONTENT_LEN, "php-fpm refuses content + padding > 65535");
            if usize::from(header.content_length) <= 65_528 {
                prop_assert_eq!(padded % 8, 0);
            }
        }

        // The stream reader sees the same records, then a clean end.
        let mut reader = RecordReader::new(Cursor::new(&encoded));
        for expected in &records {
            prop_assert_eq!(&reader.read_record().unwrap().unwrap(), expected);
        }
        prop_assert!(reader.read_record().unwrap().is_none());

        // Any strict prefix is incomplete, never an error.
        let cut = encoded.len() - 1 - (type_byte as usize % encoded.len());
        let first_len = HEADER_LEN + records[0].content.len();
        if cut < first_len {
            prop_assert_eq!(record::decode_record(&encoded[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn params_round_trip_with_every_fitting_pair_inside_one_record(
        params in prop::collection::vec(
            ("[A-Z_]{1,20}", prop_oneof![4 => 0usize..3000, 1 => 60_000usize..70_000]),
            0..12,
        )
    ) {
        let params: Vec<(String, String)> = params
            .into_iter()
            .map(|(name, len)| (name, "v".repeat(len)))
            .collect();
        let mut encoded = Vec::new();
        encode_params(&mut encoded, 7, &params).unwrap();
        let records = decode_all(&encoded);
        prop_assert!(records.iter().all(|r| r.record_type == RecordType::Params && r.request_id == 7));
        prop_assert!(records.last().unwrap().content.is_empty());
        let joined: Vec<u8> = records.iter().flat_map(|r| r.content.clone()).collect();
        let decoded: Vec<(String, String)> = nv::decode_pairs(&joined)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        prop_assert_eq!(&decoded, &params);
        let all_fit = params.iter().all(|(n, v)| nv::encoded_len(n.len(), v.len()) <= MAX_CONTENT_LEN);
        if all_fit {
            for record in &records {
                prop_assert!(nv::decode_pairs(&record.content).is_ok(), "a pair spans two records");
            }
        }
    }

    #[test]
    fn cgi_heads_round_trip(
        status in prop_oneof![Just(200u16), 100u16..=999],
        headers in prop::collection::vec(
            ("[A-Za-z][A-Za-z0-9-]{0,20}", prop_oneof![Just(String::new()), "[!-~]([ -~]{0,30}[!-~])?"]),
            0..8,
        ),
        crlf in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("status"))
            .collect();
        let head = CgiHead { status, headers };
        let mut stdout = cgi::encode_head(&head, if crlf { "\r\n" } else { "\n" });
        let body_start = stdout.len();
        stdout.extend_from_slice(&body);

        let (parsed, start) = cgi::parse_head(&stdout).unwrap();
        prop_assert_eq!(&parsed, &head);
        prop_assert_eq!(start, body_start);
        let response = Response::from_streams(stdout, b"", 0).unwrap();
        prop_assert_eq!(response.status, status);
        prop_assert_eq!(response.body, body);
    }

    #[test]
    fn decoders_never_panic_nor_allocate_beyond_their_input(
        input in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            // Plausible headers with hostile lengths, so decoding gets past the first byte.
            (any::<u8>(), any::<u16>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..600))
                .prop_map(|(kind, len, pad, rest)| {
                    let mut bytes = vec![1, kind % 12, 0, 1];
                    bytes.extend(len.to_be_bytes());
                    bytes.extend([pad, 0]);
                    bytes.extend(rest);
                    bytes
                }),
            // Name-value pairs whose 4-byte lengths claim up to 2 GiB.
            prop::collection::vec((any::<u32>(), any::<u8>()), 0..20).prop_map(|parts| {
                parts.into_iter().flat_map(|(len, b)| {
                    let mut v = (len | 0x8000_0000).to_be_bytes().to_vec();
                    v.push(b);
                    v
                }).collect::<Vec<u8>>()
            }),
        ]
    ) {
        let len = input.len();

        let (_, peak) = peak_bytes(|| record::decode_record(&input));
        prop_assert!(peak <= len + 64, "decode_record: {peak} bytes for {len}");

        let (_, peak) = peak_bytes(|| nv::decode_pairs(&input));
        prop_assert!(peak <= 64 * len + 4096, "decode_pairs: {peak} bytes for {len}");

        let (_, peak) = peak_bytes(|| cgi::parse_head(&input));
        prop_assert!(peak <= 4 * len + 4096, "parse_head: {peak} bytes for {len}");

        let (_, peak) = peak_bytes(|| Response::from_streams(input.clone(), &input, 0));
        prop_assert!(peak <= 8 * len + 4096, "from_streams: {peak} bytes for {len}");

        let (_, peak) = peak_bytes(|| {
            let mut reader = RecordReader::new(Cursor::new(&input));
            loop {
                match reader.read_record() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(ReadError::Truncated) | Err(ReadError::Protocol(_)) => break,
                    Err(ReadError::Io(e)) => panic!("a cursor cannot fail: {e}"),
                }
            }
        });
        prop_assert!(peak <= 2 * len + 4096, "RecordReader: {peak} bytes for {len}");
    }
}

proptest! {
    // Each case starts a server thread; fewer cases keep this quick.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn client_survives_any_reply(
        reply in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            // A valid start followed by garbage, to get deeper into the client.
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|tail| {
                let mut bytes = Vec::new();
                record::encode_record(&mut bytes, RecordType::Stdout, 1, b"X-A: 1\r\n\r\nhi").unwrap();
                bytes.extend(tail);
                bytes
            }),
        ]
    ) {
        let server = FakeServer::start(1, move |_, stream, _| {
            if read_request(stream).is_some() {
                let _ = stream.write_all(&reply);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                drain(stream);
            }
        });
        let mut client = Client::connect(&server.addr, TIMEOUT).unwrap();
        // Any result will do, as long as it comes back.
        let _ = client.request(&Request::get("/srv/app/probe.php", ""));
    }
}

#[test]
fn allocation_counter_sees_allocations() {
    let (v, peak) = peak_bytes(|| vec![0u8; 1 << 20]);
    assert_eq!(v.len(), 1 << 20);
    assert!(peak >= 1 << 20, "{peak}");
}

#[test]
fn declared_lengths_alone_reserve_nothing() {
    // A record that claims 65535 bytes of content and brings 16.
    let mut bytes = Header {
        version: 1,
        record_type: RecordType::Stdout,
        request_id: 1,
        content_length: 0xFFFF,
        padding_length: 255,
    }
    .encode()
    .to_vec();
    bytes.extend([b'x'; 16]);
    let (result, peak) = peak_bytes(|| RecordReader::new(Cursor::new(&bytes)).read_record());
    assert!(matches!(result, Err(ReadError::Truncated)));
    assert!(peak < 1024, "{peak}");

    // A name that claims 2 GiB.
    let (result, peak) = peak_bytes(|| nv::decode_pairs(&[0xFF, 0xFF, 0xFF, 0xFF, 0, b'a']));
    assert!(result.is_err());
    assert!(peak < 1024, "{peak}");
}
