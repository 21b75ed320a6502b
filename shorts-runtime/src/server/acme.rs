//! Certificates from an ACME CA, through the TLS-ALPN-01 challenge answered by the listener itself:
//! obtained when there is none, cached on disk, and renewed once a third of their lifetime is left.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::tls::{CertStore, PairError, TlsError, certified_key, provider};
use crate::config::AcmeConfig;

/// The first delay after a failed attempt; it doubles up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest delay between attempts.
const LAST_RETRY: Duration = Duration::from_secs(3600);
/// The longest sleep before the renewal time is computed again (a suspended machine, a clock
/// that moved).
const RECHECK: Duration = Duration::from_secs(3600);
/// How long one order may take to become ready, and its certificate to be issued.
const ORDER_PATIENCE: Duration = Duration::from_secs(90);

/// Why obtaining a certificate failed; the message carries the CA's problem document.
#[derive(Debug, thiserror::Error)]
enum AcmeError {
    #[error("{0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("the CA offers no tls-alpn-01 challenge for {0}")]
    NoTlsAlpn(String),
    #[error("the authorization for {domain} is {status:?}")]
    Authorization {
        domain: String,
        status: AuthorizationStatus,
    },
    #[error("the order is {status:?}: {problems}")]
    Order { status: OrderStatus, problems: String },
    #[error("the challenge certificate cannot be made: {0}")]
    Challenge(String),
    #[error("the issued certificate cannot be used: {0}")]
    Issued(#[from] PairError),
    #[error("the cache cannot be written: {0}")]
    Cache(#[from] std::io::Error),
}

/// A certificate with its validity.
#[derive(Clone)]
struct Issued {
    key: CertifiedKey,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Issued {
    /// Parses a PEM file holding the private key and the chain.
    fn parse(pem: &[u8]) -> Result<Self, PairError> {
        let key = certified_key(pem, pem)?;
        let leaf = super::x509::read(key.cert.first().ok_or(PairError::NoCertificate)?)
            .map_err(|e| PairError::Certificate(e.to_string()))?;
        Ok(Self {
            key,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        })
    }

    /// When to renew: once a third of the lifetime is left (30 days of a 90-day certificate).
    fn renew_at(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_after - lifetime / 3
    }
}

/// Where the account and the certificate are kept for one directory and one set of names.
struct Cache {
    account: PathBuf,
    certificate: PathBuf,
}

impl Cache {
    fn new(config: &AcmeConfig) -> Self {
        let directory = short_hash([config.directory.as_str()]);
        let mut domains = config.domains.clone();
        domains.sort();
        let names =
            short_hash(std::iter::once(config.directory.as_str()).chain(domains.iter().map(String::as_str)));
        Self {
            account: config.cache.join(format!("account-{directory}.json")),
            certificate: config.cache.join(format!("certificate-{names}.pem")),
        }
    }

    fn load_account(&self) -> Option<AccountCredentials> {
        let text = std::fs::read(&self.account).ok()?;
        match serde_json::from_slice(&text) {
            Ok(credentials) => Some(credentials),
            Err(e) => {
                warn!(path = %self.account.display(), error = %e, "the cached ACME account cannot be read; creating another");
                None
            }
        }
    }

    fn load_certificate(&self) -> Option<Issued> {
        let pem = std::fs::read(&self.certificate).ok()?;
        match Issued::parse(&pem) {
            Ok(issued) => Some(issued),
            Err(e) => {
                warn!(path = %self.certificate.display(), error = %e, "the cached certificate cannot be used; obtaining another");
                None
            }
        }
    }
}

/// Where the certificate for `config`'s directory and names is cached.
pub(crate) fn certificate_path(config: &AcmeConfig) -> PathBuf {
    Cache::new(config).certificate
}

fn short_hash<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update(b"\n");
    }
    hash.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `contents` to `path` readable by this user only, replacing it at once.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Creates the cache folder (`0700`), serves a cached certificate at once when it is still valid,
/// and starts the task that obtains and renews the certificate.
pub(crate) async fn start(
    config: &AcmeConfig,
    store: Arc<CertStore>,
    stop: CancellationToken,
) -> Result<(), TlsError> {
    let mut folder = std::fs::DirBuilder::new();
    folder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut folder, 0o700);
    folder.create(&config.cache).map_err(|e| TlsError::File {
        var: "SHORTS_ACME_CACHE",
        path: config.cache.clone(),
        reason: format!("cannot be created: {e}"),
    })?;
    let mut client = reqwest::Client::builder()
        .user_agent(concat!("shorts/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30));
    if let Some(path) = &config.ca_root {
        let invalid = |reason: String| TlsError::File {
            var: "SHORTS_ACME_CA_ROOT",
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot be read: {e}")))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| invalid(format!("is not a PEM certificate: {e}")))?;
        if roots.is_empty() {
            return Err(invalid("holds no PEM certificate".to_owned()));
        }
        client = client.tls_certs_merge(roots);
    }
    let client = client.build().map_err(|e| TlsError::File {
        var: "SHORTS_ACME_CA_ROOT",
        path: config.ca_root.clone().unwrap_or_default(),
        reason: format!("the HTTP client cannot be built: {e}"),
    })?;
    let cache = Cache::new(config);
    let cached = cache.load_certificate();
    if let Some(issued) = &cached
        && issued.not_after > SystemTime::now()
    {
        store.set(issued.key.clone());
        info!(
            path = %cache.certificate.display(),
            expires = %humantime::format_rfc3339_seconds(issued.not_after),
            "serving the cached certificate"
        );
    }
    let manager = Manager {
        config: config.clone(),
        client,
        cache,
        store,
        account: None,
    };
    tokio::spawn(manager.run(cached, stop));
    Ok(())
}

struct Manager {
    config: AcmeConfig,
    client: reqwest::Client,
    cache: Cache,
    store: Arc<CertStore>,
    account: Option<Account>,
}

impl Manager {
    /// Obtains a certificate whenever the one served is due for renewal (or missing), retrying
    /// failures with a doubling delay, until `stop`.
    async fn run(mut self, mut current: Option<Issued>, stop: CancellationToken) {
        let mut retry = FIRST_RETRY;
        loop {
            let due = current.as_ref().map_or(SystemTime::UNIX_EPOCH, Issued::renew_at);
            while let Ok(left) = due.duration_since(SystemTime::now()) {
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(left.min(RECHECK)) => {}
                }
            }
            info!(domains = ?self.config.domains, directory = %self.config.directory, "requesting a certificate");
            let started = std::time::Instant::now();
            let result = tokio::select! {
                () = stop.cancelled() => return,
                result = self.obtain() => result,
            };
            self.store.clear_challenges();
            match result {
                Ok(issued) => {
                    self.store.set(issued.key.clone());
                    info!(
                        took = %crate::logs::duration(started.elapsed()),
                        expires = %humantime::format_rfc3339_seconds(issued.not_after),
                        renews = %humantime::format_rfc3339_seconds(issued.renew_at()),
                        "certificate obtained"
                    );
                    current = Some(issued);
                    retry = FIRST_RETRY;
                }
                Err(e) => {
                    error!(
                        directory = %self.config.directory,
                        error = %e,
                        retry_in = %crate::logs::duration(retry),
                        "the certificate could not be obtained"
                    );
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(LAST_RETRY);
                }
            }
        }
    }

    fn http(&self) -> Box<dyn HttpClient> {
        Box::new(Http(self.client.clone()))
    }

    /// The cached account, or a new one (then cached).
    async fn account(&mut self) -> Result<Account, AcmeError> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let account = match self.cache.load_account() {
            Some(credentials) => {
                Account::builder_with_http(self.http())
                    .from_credentials(credentials)
                    .await?
            }
            None => {
                let contact = self.config.email.iter().map(|e| format!("mailto:{e}"));
                let contact: Vec<String> = contact.collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = Account::builder_with_http(self.http())
                    .create(&new, self.config.directory.as_str().to_owned(), None)
                    .await?;
                let json = serde_json::to_vec(&credentials).map_err(std::io::Error::other)?;
                write_private(&self.cache.account, &json)?;
                info!(id = account.id(), "ACME account created");
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// One order: answer each authorization's TLS-ALPN-01 challenge, finalize, download, cache.
    async fn obtain(&mut self) -> Result<Issued, AcmeError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|domain| Identifier::Dns(domain.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(AcmeError::Authorization {
                        domain: authorization.identifier().to_string(),
                        status,
                    });
                }
            }
            let domain = authorization.identifier().to_string();
            let mut challenge = authorization
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| AcmeError::NoTlsAlpn(domain.clone()))?;
            let answer = challenge_key(&domain, challenge.key_authorization().digest().as_ref())?;
            self.store.set_challenge(&domain, answer);
            challenge.set_ready().await?;
        }
        let patience = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(ORDER_PATIENCE);
        let status = order.poll_ready(&patience).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order {
                status,
                problems: problems(&mut order).await,
            });
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&patience).await?;
        let pem = format!("{key_pem}\n{chain_pem}");
        let issued = Issued::parse(pem.as_bytes())?;
        write_private(&self.cache.certificate, pem.as_bytes())?;
        Ok(issued)
    }
}

/// The order's problem and each challenge's, as the CA reported them.
async fn problems(order: &mut Order) -> String {
    let mut problems = Vec::new();
    if let Some(problem) = &order.state().error {
        problems.push(problem.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        match authorization {
            Ok(authorization) => {
                for challenge in &authorization.challenges {
                    if let Some(problem) = &challenge.error {
                        problems.push(format!("{}: {problem}", authorization.identifier()));
                    }
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        "the CA gave no reason".to_owned()
    } else {
        problems.join("; ")
    }
}

/// The self-signed certificate that answers a TLS-ALPN-01 challenge for `domain` (RFC 8737).
fn challenge_key(domain: &str, digest: &[u8]) -> Result<CertifiedKey, AcmeError> {
    let failed = |e: rcgen::Error| AcmeError::Challenge(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(failed)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(failed)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate, and webpki refuses the
    // critical acmeIdentifier extension. The pair was made together just above.
    let signer = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| AcmeError::Challenge(e.to_string()))?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signer,
    ))
}

/// The ACME client's HTTP, through reqwest (and so through the same rustls).
struct Http(reqwest::Client);

impl HttpClient for Http {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let response = client
                .execute(request)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(http::Response::<reqwest::Body>::from(
                response,
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_with_a_third_of_the_lifetime_left() {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = rcgen::CertificateParams::new(vec!["shorts.example.com".to_owned()])
            .unwrap_or_else(|e| panic!("{e}"));
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 4, 1);
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let pem = format!("{}\n{}", key.serialize_pem(), cert.pem());
        let issued = Issued::parse(pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let day = 86_400;
        let start = 1_893_456_000; // 2030-01-01
        assert_eq!(
            issued.not_before,
            SystemTime::UNIX_EPOCH + Duration::from_secs(start)
        );
        // 90 days of validity: renewed 30 days before the end.
        assert_eq!(
            issued.renew_at(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(start + 60 * day)
        );
    }

    #[test]
    fn each_directory_and_set_of_names_has_its_own_cache_files() {
        let a = Cache::new(&AcmeConfig::new(["a.example.com", "b.example.com"]));
        let b = Cache::new(&AcmeConfig::new(["b.example.com", "a.example.com"]));
        let c = Cache::new(&AcmeConfig::new(["a.example.com"]));
        assert_eq!(a.certificate, b.certificate);
        assert_ne!(a.certificate, c.certificate);
        assert_eq!(a.account, c.account);
    }
}
