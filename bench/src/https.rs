//! The HTTPS rows: shorts (SQLite) serving its webhook over TLS (`SHORTS_TLS_CERT` and
//! `SHORTS_TLS_KEY`, a self-signed certificate for `localhost`), against the same server over plain
//! HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use shorts_runtime::testing::MockPlatform;

use crate::proc;

/// A self-signed certificate for `localhost`: its PEM (what the client trusts) and the files the
/// server reads.
pub(crate) struct Certificate {
    pem: String,
    pub(crate) cert: std::path::PathBuf,
    pub(crate) key: std::path::PathBuf,
}

impl Certificate {
    pub(crate) fn new(dir: &Path) -> Self {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("certificate parameters")
            .self_signed(&key)
            .expect("a self-signed certificate");
        let pem = cert.pem();
        let (cert_path, key_path) = (dir.join("https-cert.pem"), dir.join("https-key.pem"));
        std::fs::write(&cert_path, &pem).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        Self {
            pem,
            cert: cert_path,
            key: key_path,
        }
    }

    /// A client trusting this certificate only, reaching `localhost` at `port` on 127.0.0.1.
    /// `pool` is the number of idle connections it keeps (0: a new connection per request).
    pub(crate) fn client(&self, port: u16, pool: usize) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.pem.as_bytes()).expect("PEM")])
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
            .pool_max_idle_per_host(pool)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }
}

/// Requests sent one after the other, each on a connection of its own.
pub(crate) struct Fresh {
    /// Median time of a request, connection included, µs.
    pub(crate) median: f64,
    /// The server's CPU time per request (connection included), µs.
    pub(crate) cpu: f64,
}

/// `count` webhooks, one at a time, each on a new connection: from `client` (no idle connections
/// kept; TLS sessions are resumed) or, with `client` `None`, from a new client each time (a full
/// handshake each time; the client is built before the clock starts).
pub(crate) async fn fresh_connections(
    pid: u32,
    url: &str,
    port: u16,
    platform: &MockPlatform,
    certificate: Option<&Certificate>,
    client: Option<&reqwest::Client>,
    count: usize,
) -> Fresh {
    let body = crate::service::body(platform);
    let before = proc::Usage::of(pid).unwrap_or_default();
    let mut times = Vec::with_capacity(count);
    let prefix = format!("f{}", fastrand::u64(..));
    for i in 0..count {
        let own;
        let client = match (client, certificate) {
            (Some(client), _) => client,
            (None, Some(certificate)) => {
                own = certificate.client(port, 0);
                &own
            }
            (None, None) => {
                own = plain_client(port, 0);
                &own
            }
        };
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-api-key", MockPlatform::WEBHOOK_KEY)
            .body(body(&format!("{prefix}-{i}")));
        let started = Instant::now();
        let response = request.send().await.expect("a webhook");
        assert!(response.status().is_success(), "a webhook was refused");
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let after = proc::Usage::of(pid).unwrap_or_default();
    times.sort_by(f64::total_cmp);
    let cpu = after.per(&before, u32::try_from(count.max(1)).unwrap_or(u32::MAX));
    Fresh {
        median: times.get(times.len() / 2).copied().unwrap_or(0.0),
        cpu: cpu.cpu() * 1e6,
    }
}

/// A plain-HTTP client reaching `localhost` at `port` on 127.0.0.1.
pub(crate) fn plain_client(port: u16, pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}
