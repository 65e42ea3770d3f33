use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the connection closed")]
    Closed,
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    #[error("received a frame of unknown kind {0}")]
    UnknownKind(u8),
    #[error("received a {kind} frame of {len} bytes, over the limit of {limit}")]
    TooLarge { kind: String, len: u32, limit: u32 },
    #[error("expected {expected}, received {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error("received a message that does not parse: {0}")]
    BadMessage(String),
    #[error("the peer speaks protocol {theirs} ({version}); this cutover speaks {ours}")]
    Version {
        ours: u32,
        theirs: u32,
        version: String,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ProtocolError {
    /// The peer went away (killed, connection dropped) rather than misbehaving.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ProtocolError::Closed | ProtocolError::Truncated => true,
            ProtocolError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}
