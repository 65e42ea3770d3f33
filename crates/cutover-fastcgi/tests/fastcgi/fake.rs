//! A scripted FastCGI server on a unix socket, for replies php-fpm never sends.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use cutover_fastcgi::record::{self, EndRequest, ProtocolStatus, Record, RecordReader, RecordType};
use cutover_fastcgi::{nv, Address};
use tempfile::TempDir;

/// What the fake server received as one request.
#[derive(Debug)]
pub struct Received {
    pub begin: Vec<u8>,
    pub request_id: u16,
    /// The PARAMS records as they arrived, to check how the client cut them.
    pub param_records: Vec<Record>,
    pub params: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

pub struct FakeServer {
    pub addr: Address,
    received: mpsc::Receiver<Received>,
    _dir: TempDir,
}

impl FakeServer {
    /// Accepts `connections` connections one after another and hands each to `serve`
    /// with its index. `serve` reports requests it read through the given sender.
    pub fn start<F>(connections: usize, serve: F) -> FakeServer
    where
        F: Fn(usize, &mut UnixStream, &mpsc::Sender<Received>) + Send + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for index in 0..connections {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                serve(index, &mut stream, &tx);
            }
        });
        FakeServer {
            addr: Address::Unix(path),
            received: rx,
            _dir: dir,
        }
    }

    /// A server that reads one request and answers with `reply`, then keeps the
    /// connection open until the client closes it.
    pub fn replying(reply: Vec<u8>) -> FakeServer {
        FakeServer::start(1, move |_, stream, tx| {
            if let Some(request) = read_request(stream) {
                let _ = tx.send(request);
                let _ = stream.write_all(&reply);
                drain(stream);
            }
        })
    }

    pub fn received(&self) -> Received {
        self.received
            .recv_timeout(Duration::from_secs(10))
            .expect("the fake server received no request")
    }

    /// A request received within a short wait, if any.
    pub fn try_received(&self) -> Option<Received> {
        self.received.recv_timeout(Duration::from_millis(300)).ok()
    }
}

/// Reads BEGIN_REQUEST, PARAMS and STDIN up to the empty STDIN record.
pub fn read_request(stream: &mut UnixStream) -> Option<Received> {
    let mut reader = RecordReader::new(stream);
    let begin = reader.read_record().ok()??;
    assert_eq!(begin.record_type, RecordType::BeginRequest);
    let mut received = Received {
        begin: begin.content,
        request_id: begin.request_id,
        param_records: Vec::new(),
        params: Vec::new(),
        stdin: Vec::new(),
    };
    let mut params = Vec::new();
    loop {
        let record = reader.read_record().ok()??;
        assert_eq!(record.request_id, received.request_id);
        match record.record_type {
            RecordType::Params => {
                params.extend_from_slice(&record.content);
                received.param_records.push(record);
            }
            RecordType::Stdin if record.content.is_empty() => break,
            RecordType::Stdin => received.stdin.extend_from_slice(&record.content),
            other => panic!("unexpected {other} in a request"),
        }
    }
    received.params = nv::decode_pairs(&params)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    Some(received)
}

/// Reads until the client closes the connection.
pub fn drain(stream: &mut UnixStream) {
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

pub fn record(record_type: RecordType, request_id: u16, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_record(&mut out, record_type, request_id, content).unwrap();
    out
}

pub fn end(request_id: u16, app_status: u32, status: ProtocolStatus) -> Vec<u8> {
    let body = EndRequest {
        app_status,
        protocol_status: status,
    }
    .encode();
    record(RecordType::EndRequest, request_id, &body)
}

/// A complete answer to request 1: STDOUT (then its end), optional STDERR, END_REQUEST.
pub fn answer(stdout: &[u8], stderr: &[u8], app_status: u32) -> Vec<u8> {
    let mut out = Vec::new();
    if !stderr.is_empty() {
        record::encode_stream(&mut out, RecordType::Stderr, 1, stderr);
    }
    record::encode_stream(&mut out, RecordType::Stdout, 1, stdout);
    out.extend(end(1, app_status, ProtocolStatus::RequestComplete));
    out
}
