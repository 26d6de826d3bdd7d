//! TLS on the API port (rustls): gRPC and HTTP/JSON stay on one port, the
//! protocol chosen by ALPN (`h2` for gRPC and HTTP/2, `http/1.1` for curl
//! and browsers).
//!
//! Handshakes run beside the accept loop, each bounded in time and in
//! number, so that a client that connects and never speaks holds neither the
//! port nor other clients back.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait to be accepted.
const HANDSHAKES_AT_ONCE: usize = 256;

/// Why the server's certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The server's certificate chain and private key, ready to accept
/// connections.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl ServerTls {
    /// Reads a PEM certificate chain (the server's certificate first, then
    /// any intermediates) and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                TlsError(format!(
                    "cannot read the TLS {what} {} ({e}); give a readable PEM file",
                    path.display()
                ))
            })
        };
        let (cert_pem, key_pem) = (read(cert, "certificate")?, read(key, "key")?);
        Self::from_pem(&cert_pem, &key_pem).map_err(|TlsError(e)| {
            TlsError(format!("{} and {}: {e}", cert.display(), key.display()))
        })
    }

    /// [`from_pem_files`](Self::from_pem_files) from the files' contents.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("the certificate is not valid PEM ({e})")))?;
        if chain.is_empty() {
            return Err(TlsError(
                "the certificate file holds no certificate; give a PEM file with `-----BEGIN CERTIFICATE-----` blocks".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            TlsError(format!(
                "the key file holds no usable private key ({e}); give a PEM file with a PKCS#8, PKCS#1 or SEC1 key"
            ))
        })?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("no TLS version is available ({e})")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                TlsError(format!(
                    "the key does not go with the certificate, or is of a kind rustls refuses ({e})"
                ))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Accepts on `listener`, handing out connections once their handshake
    /// completed (with `TCP_NODELAY` set, as on the plaintext port).
    pub(crate) fn listen(&self, listener: TcpListener) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (ready, accepted) = mpsc::channel(HANDSHAKES_AT_ONCE);
        let acceptor = self.acceptor.clone();
        let accepting = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors or a connection reset before it was
                        // accepted: wait a moment rather than spin.
                        tracing::debug!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY on an accepted connection: {e}");
                }
                let (acceptor, ready) = (acceptor.clone(), ready.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    drop(slot);
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            accepted,
            local,
            accepting,
        })
    }
}

/// A listener whose connections have completed their TLS handshake.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept loop ended (only when the runtime shuts down).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
