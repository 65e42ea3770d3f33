//! Replies php-fpm never sends — protocol violations, refusals, trickling, hang-ups — from
//! a scripted server, and what exactly the client puts on the wire.

use std::io::Write;
use std::time::{Duration, Instant};

use cutover_fastcgi::record::{
    self, ProtocolStatus, RecordType, FLAG_KEEP_CONN, HEADER_LEN, MAX_CONTENT_LEN,
};
use cutover_fastcgi::{get_values, nv, Client, Error, Phase, ProtocolError, Request, Timeouts};

use crate::fake::{answer, drain, end, read_request, record, FakeServer};
use crate::support::TIMEOUT;

fn request_error(server: &FakeServer) -> Error {
    let mut client = Client::connect(&server.addr, TIMEOUT).unwrap();
    client
        .request(&Request::get("/srv/app/probe.php", ""))
        .unwrap_err()
}

fn protocol_error(server: &FakeServer) -> ProtocolError {
    match request_error(server) {
        Error::Protocol { error, .. } => error,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn request_goes_out_as_begin_params_stdin_with_whole_pairs_per_record() {
    let server = FakeServer::replying(answer(b"Content-Type: text/plain\r\n\r\nok", b"", 0));
    let mut request = Request::post("/srv/app/probe.php", "text/plain", vec![7u8; 200_000]);
    for i in 0..30 {
        request = request.param(format!("P{i}"), "x".repeat(3000 + i));
    }
    request = request.param("EMPTY", "");
    let mut client = Client::connect(&server.addr, TIMEOUT).unwrap();
    let response = client.request(&request).unwrap();
    assert_eq!(response.body_text(), "ok");

    let received = server.received();
    assert_eq!(received.request_id, 1);
    // Responder role, keep-conn.
    assert_eq!(received.begin, [0, 1, FLAG_KEEP_CONN, 0, 0, 0, 0, 0]);
    assert_eq!(received.params, request.params);
    assert_eq!(received.stdin, request.stdin);
    assert!(received.param_records.len() > 1);
    for params in &received.param_records {
        // php-fpm parses each PARAMS record on its own.
        nv::decode_pairs(&params.content).unwrap();
    }
}

#[test]
fn http_server_instead_of_fastcgi_is_a_bad_version_with_a_hint() {
    let server = FakeServer::replying(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec());
    let err = request_error(&server);
    assert!(
        matches!(
            err,
            Error::Protocol {
                error: ProtocolError::BadVersion(b'H'),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("HTTP port"));
}

#[test]
fn record_for_another_request_id_is_a_mismatch() {
    let mut reply = record(RecordType::Stdout, 2, b"X-A: 1\r\n\r\n");
    reply.extend(end(2, 0, ProtocolStatus::RequestComplete));
    let server = FakeServer::replying(reply);
    assert_eq!(
        protocol_error(&server),
        ProtocolError::RequestIdMismatch {
            expected: 1,
            got: 2
        }
    );
}

#[test]
fn unexpected_record_type_is_named() {
    let server = FakeServer::replying(record(RecordType::Params, 1, b""));
    assert_eq!(
        protocol_error(&server),
        ProtocolError::UnexpectedRecord {
            record_type: RecordType::Params,
            request_id: 1
        }
    );
}

#[test]
fn unknown_type_reply_names_the_type_it_did_not_know() {
    let server = FakeServer::replying(record(
        RecordType::UnknownType,
        0,
        &[99, 0, 0, 0, 0, 0, 0, 0],
    ));
    let err = protocol_error(&server);
    assert_eq!(err, ProtocolError::UnknownTypeReply(99));
    assert!(err.to_string().contains("record type 99"));
}

#[test]
fn end_request_with_a_short_body_is_a_protocol_error() {
    let server = FakeServer::replying(record(RecordType::EndRequest, 1, &[0, 0, 0]));
    assert_eq!(
        protocol_error(&server),
        ProtocolError::BadBodyLength {
            record_type: RecordType::EndRequest,
            len: 3
        }
    );
}

#[test]
fn protocol_statuses_other_than_complete_are_refusals() {
    for status in [
        ProtocolStatus::CantMpxConn,
        ProtocolStatus::Overloaded,
        ProtocolStatus::UnknownRole,
        ProtocolStatus::Other(9),
    ] {
        let server = FakeServer::replying(end(1, 0, status));
        let err = request_error(&server);
        match &err {
            Error::Rejected { status: got, .. } => assert_eq!(*got, status),
            other => panic!("expected Rejected, got {other:?}"),
        }
        if status == ProtocolStatus::Overloaded {
            assert!(err.to_string().contains("overloaded"));
            assert!(err.hint().unwrap().contains("pm.max_children"));
        }
    }
}

#[test]
fn hang_up_mid_response_says_how_much_arrived() {
    let server = FakeServer::start(1, |_, stream, _| {
        read_request(stream);
        let mut reply = record(RecordType::Stderr, 1, b"segfault ahead");
        reply.extend(record(RecordType::Stdout, 1, b"X-A: 1\r\n\r\nhalf"));
        stream.write_all(&reply).unwrap();
    });
    let err = request_error(&server);
    match &err {
        Error::ConnectionClosed {
            stdout_bytes,
            stderr,
            ..
        } => {
            assert_eq!(*stdout_bytes, 14);
            assert_eq!(stderr, "segfault ahead");
        }
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    assert!(err.hint().unwrap().contains("error log"));
}

#[test]
fn hang_up_mid_record_is_a_closed_connection() {
    let server = FakeServer::start(1, |_, stream, _| {
        read_request(stream);
        let full = record(RecordType::Stdout, 1, &[b'x'; 100]);
        stream.write_all(&full[..HEADER_LEN + 10]).unwrap();
    });
    assert!(matches!(
        request_error(&server),
        Error::ConnectionClosed { .. }
    ));
}

#[test]
fn trickling_server_cannot_stretch_the_receive_timeout() {
    let server = FakeServer::start(1, |_, stream, _| {
        read_request(stream);
        let mut header = record(RecordType::Stdout, 1, &[b'x'; 4000]);
        header.truncate(HEADER_LEN + 4000);
        // One byte every 20 ms: each read succeeds, the whole never arrives in time.
        for byte in header.iter().take(250) {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut client = Client::connect_with(
        &server.addr,
        Timeouts {
            receive: Duration::from_millis(300),
            ..Timeouts::all(TIMEOUT)
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = client
        .request(&Request::get("/srv/app/probe.php", ""))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Receive,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn server_that_never_reads_times_out_in_the_send_phase() {
    let server = FakeServer::start(1, |_, _stream, _| {
        std::thread::sleep(Duration::from_secs(3));
    });
    let mut client = Client::connect_with(
        &server.addr,
        Timeouts {
            send: Duration::from_millis(300),
            ..Timeouts::all(TIMEOUT)
        },
    )
    .unwrap();
    // Far more than a unix socket buffers.
    let request = Request::post("/srv/app/probe.php", "text/plain", vec![0u8; 16 << 20]);
    let err = client.request(&request).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Send,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn headers_without_a_colon_are_malformed() {
    let server = FakeServer::replying(answer(b"this is not a header\r\n\r\nbody", b"", 0));
    assert!(matches!(
        protocol_error(&server),
        ProtocolError::CgiHeaders(reason) if reason.contains("no colon")
    ));
}

#[test]
fn output_without_a_blank_line_is_malformed() {
    let server = FakeServer::replying(answer(b"X-A: 1\r\nX-B: 2\r\n", b"", 0));
    assert!(matches!(
        protocol_error(&server),
        ProtocolError::CgiHeaders(reason) if reason.contains("never end")
    ));
}

#[test]
fn lf_only_headers_status_repeated_headers_stderr_and_app_status() {
    let server = FakeServer::replying(answer(
        b"Status: 503 Service Unavailable\nX-A: 1\nX-A:2\nContent-Type:  text/plain \n\nbody\r\n\r\nmore",
        b"warning one\n",
        3,
    ));
    let mut client = Client::connect(&server.addr, TIMEOUT).unwrap();
    let response = client
        .request(&Request::get("/srv/app/probe.php", ""))
        .unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(
        response.headers,
        [
            ("X-A".to_owned(), "1".to_owned()),
            ("X-A".to_owned(), "2".to_owned()),
            ("Content-Type".to_owned(), "text/plain".to_owned()),
        ]
    );
    assert_eq!(response.body, b"body\r\n\r\nmore");
    assert_eq!(response.stderr, "warning one\n");
    assert_eq!(response.app_status, 3);
}

#[test]
fn response_over_the_limit_is_refused() {
    let mut body = b"X-A: 1\r\n\r\n".to_vec();
    body.extend(vec![b'x'; 200_000]);
    let server = FakeServer::replying(answer(&body, b"", 0));
    let mut client = Client::connect(&server.addr, TIMEOUT).unwrap();
    client.set_max_response_bytes(100_000);
    let err = client
        .request(&Request::get("/srv/app/probe.php", ""))
        .unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit: 100_000, .. }),
        "{err:?}"
    );
}

#[test]
fn kept_connection_closed_by_the_server_is_retried_once_on_a_new_one() {
    let server = FakeServer::start(2, |index, stream, tx| {
        // First connection: answer one request, then close (like pm.max_requests).
        // Second connection: answer every request.
        while let Some(request) = read_request(stream) {
            tx.send(request).unwrap();
            let text = format!("X-Conn: {index}\r\n\r\n");
            stream.write_all(&answer(text.as_bytes(), b"", 0)).unwrap();
            if index == 0 {
                return;
            }
        }
    });
    let mut client = Client::connect(&server.addr, TIMEOUT).unwrap();
    let conns: Vec<String> = (0..3)
        .map(|_| {
            client
                .request(&Request::get("/srv/app/probe.php", ""))
                .unwrap()
                .header("X-Conn")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(conns, ["0", "1", "1"]);
    for _ in 0..3 {
        server.received();
    }
}

#[test]
fn fresh_connection_closed_before_answering_is_not_retried() {
    let server = FakeServer::start(2, |_, stream, tx| {
        if let Some(request) = read_request(stream) {
            tx.send(request).unwrap();
        }
    });
    let err = request_error(&server);
    assert!(
        matches!(
            err,
            Error::ConnectionClosed {
                stdout_bytes: 0,
                ..
            }
        ),
        "{err:?}"
    );
    server.received();
    assert!(
        server.try_received().is_none(),
        "the request must not run twice"
    );
}

#[test]
fn get_values_sends_names_and_decodes_the_answer() {
    let server = FakeServer::start(1, |_, stream, _| {
        let mut reader = record::RecordReader::new(&mut *stream);
        let request = reader.read_record().unwrap().unwrap();
        assert_eq!(request.record_type, RecordType::GetValues);
        assert_eq!(request.request_id, 0);
        let names = nv::decode_pairs(&request.content).unwrap();
        assert_eq!(names.len(), 3);
        assert!(names.iter().all(|(_, v)| v.is_empty()));
        let answer = nv::encode_pairs(&[
            ("FCGI_MAX_CONNS", "10"),
            ("FCGI_MAX_REQS", "50"),
            ("FCGI_MPXS_CONNS", "0"),
        ])
        .unwrap();
        stream
            .write_all(&record(RecordType::GetValuesResult, 0, &answer))
            .unwrap();
        drain(stream);
    });
    let values = get_values(
        &server.addr,
        &["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"],
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(values["FCGI_MAX_CONNS"], "10");
    assert_eq!(values["FCGI_MAX_REQS"], "50");
    assert_eq!(values["FCGI_MPXS_CONNS"], "0");
}

#[test]
fn get_values_answer_with_a_lying_length_is_a_protocol_error() {
    let server = FakeServer::start(1, |_, stream, _| {
        let mut reader = record::RecordReader::new(&mut *stream);
        reader.read_record().unwrap();
        // A name that claims 2^31 - 1 bytes in a 10-byte record.
        let content = [0xFF, 0xFF, 0xFF, 0xFF, 1, b'a', b'b', b'c', b'd', b'e'];
        stream
            .write_all(&record(RecordType::GetValuesResult, 0, &content))
            .unwrap();
        drain(stream);
    });
    let err = get_values(&server.addr, &["FCGI_MAX_CONNS"], TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol {
                error: ProtocolError::NameValueLength {
                    declared: 0x7FFF_FFFF,
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn full_records_are_sent_without_padding_past_65535() {
    let server = FakeServer::replying(answer(b"X: 1\r\n\r\n", b"", 0));
    let mut client = Client::connect(&server.addr, TIMEOUT).unwrap();
    client
        .request(&Request::post(
            "/srv/app/probe.php",
            "text/plain",
            vec![1u8; MAX_CONTENT_LEN * 2 + 5],
        ))
        .unwrap();
    assert_eq!(server.received().stdin.len(), MAX_CONTENT_LEN * 2 + 5);
    assert_eq!(record::padding_for(MAX_CONTENT_LEN), 0);
    assert_eq!(record::padding_for(65528), 0);
    assert_eq!(record::padding_for(65527), 1);
    assert_eq!(record::padding_for(1), 7);
}
