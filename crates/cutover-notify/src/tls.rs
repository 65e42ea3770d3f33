//! HTTPS for webhooks: rustls (ring, the webpki roots) plugged into ureq as its TLS
//! connector. ureq's own `tls` feature would do the same, but cargo unifies features across
//! the workspace, and `AgentBuilder::new` then builds a rustls config in every binary that
//! makes any HTTP request — the agent uploaded to each host (health checks) among them,
//! 1.6 MB larger for TLS it never uses. This way only the crate that posts webhooks
//! carries TLS.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

/// The connector for `AgentBuilder::tls_connector`, built once per process; why not, when
/// rustls refuses the configuration (it should not: the provider and versions are fixed),
/// so that a webhook fails as a webhook does instead of the process panicking.
pub fn connector() -> Result<Arc<Connector>, String> {
    static CONNECTOR: OnceLock<Result<Arc<Connector>, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            // The provider named, not the process default: nothing else here installs one.
            let config = rustls::ClientConfig::builder_with_provider(
                rustls::crypto::ring::default_provider().into(),
            )
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS cannot be set up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Ok(Arc::new(Connector(Arc::new(config))))
        })
        .clone()
}

pub struct Connector(Arc<rustls::ClientConfig>);

impl ureq::TlsConnector for Connector {
    fn connect(
        &self,
        dns_name: &str,
        mut io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        // ureq passes an IPv6 literal with its brackets.
        let name = dns_name.trim_start_matches('[').trim_end_matches(']');
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("TLS name {name}: {e}"))
        })?;
        let mut connection = rustls::ClientConnection::new(Arc::clone(&self.0), server)
            .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
        // The handshake now, so its failure (an unknown certificate) is the connect's.
        connection
            .complete_io(&mut io)
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
        Ok(Box::new(Stream(rustls::StreamOwned::new(connection, io))))
    }
}

struct Stream(rustls::StreamOwned<rustls::ClientConnection, Box<dyn ureq::ReadWrite>>);

impl ureq::ReadWrite for Stream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.get_ref().socket()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf) {
            // A server that closes without close_notify after a complete answer: ureq has
            // the body's length already and asks for nothing more that matters.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsStream")
    }
}
