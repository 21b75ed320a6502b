//! HTTPS: the certificate the listener serves, from PEM files (read again when they change and on
//! `SIGHUP`) or from an ACME CA, and the handshake every accepted connection goes through.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{error, info, warn};

use crate::config::TlsConfig;

/// The ALPN protocol a CA uses to validate a TLS-ALPN-01 challenge (RFC 8737).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How often the certificate files are checked for a change.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file named by a variable cannot be used.
    #[error("`{var}` ({path}): {reason}")]
    File {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and the key do not belong together, or cannot be used.
    #[error("`SHORTS_TLS_CERT` and `SHORTS_TLS_KEY`: {0}")]
    Pair(#[source] PairError),
    /// The TLS settings cannot be built.
    #[error("TLS cannot be set up: {0}")]
    Rustls(#[from] rustls::Error),
    /// ACME was asked of a build without the crate's `acme` feature.
    #[error("{}", crate::config::ACME_NOT_BUILT)]
    AcmeNotBuilt,
}

/// Why a certificate chain and a key cannot be served together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairError {
    /// There is no certificate in the chain's PEM.
    #[error("the certificate file holds no PEM certificate")]
    NoCertificate,
    /// The chain's PEM cannot be read.
    #[error("the certificate file is not valid PEM: {0}")]
    Certificate(String),
    /// There is no usable key in the key's PEM.
    #[error("the key file holds no PKCS#8, RSA or EC private key: {0}")]
    Key(String),
    /// The key is not one rustls can sign with.
    #[error("the private key cannot be used: {0}")]
    UnusableKey(rustls::Error),
    /// The key is not the certificate's.
    #[error("the private key does not match the certificate")]
    Mismatch,
}

/// A certificate chain and its key, parsed and checked to belong together.
pub(crate) fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, PairError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PairError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(PairError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PairError::Key(e.to_string()))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(PairError::UnusableKey)?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(PairError::Mismatch),
        Err(e) => Err(PairError::Certificate(e.to_string())),
    }
}

/// The crypto provider rustls is built with here (aws-lc-rs, the one reqwest and sqlx use).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks the certificate files.
pub(crate) fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |var: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| TlsError::File {
            var,
            path: path.to_owned(),
            reason: format!("cannot be read: {e}"),
        })
    };
    let (cert_pem, key_pem) = (read("SHORTS_TLS_CERT", cert)?, read("SHORTS_TLS_KEY", key)?);
    certified_key(&cert_pem, &key_pem).map_err(|e| match e {
        PairError::NoCertificate | PairError::Certificate(_) => TlsError::File {
            var: "SHORTS_TLS_CERT",
            path: cert.to_owned(),
            reason: e.to_string(),
        },
        PairError::Key(_) | PairError::UnusableKey(_) => TlsError::File {
            var: "SHORTS_TLS_KEY",
            path: key.to_owned(),
            reason: e.to_string(),
        },
        PairError::Mismatch => TlsError::Pair(e),
    })
}

/// The certificates the listener serves: the current one, and the TLS-ALPN-01 answers a CA is
/// validating right now.
#[derive(Debug, Default)]
pub(crate) struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertStore {
    /// Serves `key` to new connections from now on.
    pub(crate) fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(key));
    }

    /// The certificate served now.
    pub(crate) fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Answers TLS-ALPN-01 validations of `domain` with `key`.
    #[cfg(feature = "acme")]
    pub(crate) fn set_challenge(&self, domain: &str, key: CertifiedKey) {
        self.challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(domain.to_owned(), Arc::new(key));
    }

    /// Forgets every TLS-ALPN-01 answer.
    #[cfg(feature = "acme")]
    pub(crate) fn clear_challenges(&self) {
        self.challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let challenge = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if challenge {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&name)
                .cloned();
        }
        // None aborts the handshake: no certificate yet (ACME), so no webhook either.
        self.current()
    }
}

/// A connection as hyper gets it: as accepted, or after the TLS handshake.
pub(crate) type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// Takes accepted connections through the TLS handshake when the listener serves HTTPS.
#[derive(Clone, Default)]
pub(crate) struct Acceptor {
    tls: Option<TlsAcceptor>,
}

impl Acceptor {
    /// The connection ready for HTTP: `None` when there is nothing more to do with it (a CA's
    /// TLS-ALPN-01 validation). The handshake must finish within `timeout`.
    pub(crate) async fn accept(&self, stream: TcpStream, timeout: Duration) -> io::Result<Option<Stream>> {
        let Some(tls) = &self.tls else {
            return Ok(Some(Either::Left(stream)));
        };
        let mut stream = tokio::time::timeout(timeout, tls.accept(stream))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake did not finish in time",
                )
            })??;
        if stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
            // The handshake was the whole validation.
            let _ = tokio::time::timeout(timeout, stream.shutdown()).await;
            return Ok(None);
        }
        Ok(Some(Either::Right(stream)))
    }

    /// Whether connections go through TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// HTTPS for one application: the acceptor, and the task keeping its certificate current, which
/// stops when this is dropped.
#[derive(Default)]
pub(crate) struct Tls {
    acceptor: Acceptor,
    _stop: Option<DropGuard>,
}

impl Tls {
    /// Sets up what `config` asks for: nothing, certificate files (checked now), or ACME (a cached
    /// certificate served at once; the CA contacted in the background when one is needed).
    pub(crate) async fn start(config: &TlsConfig) -> Result<Self, TlsError> {
        let store = Arc::new(CertStore::default());
        let stop = CancellationToken::new();
        let alpn = match config {
            TlsConfig::None => return Ok(Self::default()),
            TlsConfig::Files { cert, key } => {
                store.set(load_files(cert, key)?);
                tokio::spawn(watch_files(
                    cert.clone(),
                    key.clone(),
                    Arc::clone(&store),
                    stop.clone(),
                ));
                vec![b"http/1.1".to_vec()]
            }
            #[cfg(feature = "acme")]
            TlsConfig::Acme(acme) => {
                super::acme::start(acme, Arc::clone(&store), stop.clone()).await?;
                vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()]
            }
            #[cfg(not(feature = "acme"))]
            TlsConfig::Acme(_) => return Err(TlsError::AcmeNotBuilt),
        };
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(store);
        server.alpn_protocols = alpn;
        Ok(Self {
            acceptor: Acceptor {
                tls: Some(TlsAcceptor::from(Arc::new(server))),
            },
            _stop: Some(stop.drop_guard()),
        })
    }

    /// What the accept loop hands each connection to.
    pub(crate) fn acceptor(&self) -> Acceptor {
        self.acceptor.clone()
    }
}

/// What identifies a version of a file without reading it.
type Fingerprint = Option<(SystemTime, u64, u64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

/// Reads the certificate files again when either changes and on `SIGHUP`. A pair that fails to
/// load leaves the served certificate as it is.
async fn watch_files(cert: PathBuf, key: PathBuf, store: Arc<CertStore>, stop: CancellationToken) {
    let mut hangup = hangup();
    let mut seen = (fingerprint(&cert), fingerprint(&key));
    let mut tick = tokio::time::interval(FILE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let now = (fingerprint(&cert), fingerprint(&key));
                if now == seen {
                    continue;
                }
                seen = now;
                "the files changed"
            }
            () = next_hangup(&mut hangup) => "SIGHUP",
        };
        match load_files(&cert, &key) {
            Ok(loaded) => {
                store.set(loaded);
                info!(cause = why, "certificate reloaded");
            }
            Err(e) => {
                error!(cause = why, error = %e, "certificate reload failed; still serving the previous certificate");
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; the certificate files are still checked every second");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    let received = match hangup {
        Some(signal) => signal.recv().await.is_some(),
        None => false,
    };
    if !received {
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .and_then(|params| params.self_signed(&key))
            .unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_pair_is_checked() {
        let (cert, key) = pair();
        let (_, other_key) = pair();
        assert!(certified_key(cert.as_bytes(), key.as_bytes()).is_ok());
        assert!(matches!(
            certified_key(cert.as_bytes(), other_key.as_bytes()),
            Err(PairError::Mismatch)
        ));
        assert!(matches!(
            certified_key(b"", key.as_bytes()),
            Err(PairError::NoCertificate)
        ));
        assert!(matches!(
            certified_key(cert.as_bytes(), cert.as_bytes()),
            Err(PairError::Key(_))
        ));
    }
}
