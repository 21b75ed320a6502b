//! Certificates from an ACME CA, for real: Pebble (Let's Encrypt's test CA) validates the
//! TLS-ALPN-01 challenge on the server's own listener, its DNS double resolving the test name to
//! 127.0.0.1. The server starts without a certificate, obtains one, takes a webhook over HTTPS,
//! reuses the cached certificate on restart without a new order, and renews a short-lived one.
//!
//! Pebble is `apt-get install pebble` (`pebble` and `pebble-challtestsrv`); the test fails when it
//! is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use shorts_runtime::prelude::*;
use shorts_runtime::testing::MockPlatform;
use shorts_runtime::{AcmeConfig, App, Config, TlsConfig};
use shorts_tests::process::free_port;
use shorts_tests::{PATIENCE, TempDir, WEBHOOK_HEADERS};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const DOMAIN: &str = "shorts.example.com";
/// Lifetime of Pebble's certificates here: renewal is due after two thirds of it.
const VALIDITY_SECS: u64 = 24;

#[derive(Deserialize)]
struct Input {
    text: String,
}

/// Echoes the text.
#[ai_short]
async fn echo(input: Input) -> Result<String> {
    Ok(input.text)
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str], log: &Path, envs: &[(&str, &str)]) -> Process {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): install Pebble, Let's Encrypt's test CA, with \
                 `apt-get install pebble` (see the README's test instructions)"
            )
        });
    Process(child)
}

/// Pebble and its DNS double, with the CA root that signs Pebble's own HTTPS certificate.
struct Pebble {
    directory: String,
    management: String,
    log: PathBuf,
    https_root: PathBuf,
    _dns: Process,
    _pebble: Process,
}

impl Pebble {
    /// Starts Pebble validating TLS-ALPN-01 on `tls_port`, refusing the names in `blocked`, and
    /// waits until it answers.
    async fn start(dir: &TempDir, tls_port: u16, blocked: &[&str]) -> Self {
        // Pebble's own HTTPS certificate, from a CA of the test's.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "pebble test CA");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &rcgen::Issuer::new(ca, &ca_key))
            .unwrap();
        let https_root = dir.path("pebble-ca.pem");
        std::fs::write(&https_root, ca_pem).unwrap();
        std::fs::write(dir.path("pebble-cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path("pebble-key.pem"), key.serialize_pem()).unwrap();

        let (listen, management, dns, dns_management) = (free_port(), free_port(), free_port(), free_port());
        let config = json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.path("pebble-cert.pem"),
                "privateKey": dir.path("pebble-key.pem"),
                "httpPort": free_port(),
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": VALIDITY_SECS,
                "domainBlocklist": blocked,
            }
        });
        std::fs::write(dir.path("pebble.json"), config.to_string()).unwrap();
        let dns_server = format!("127.0.0.1:{dns}");
        let dns = spawn(
            "pebble-challtestsrv",
            &[
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &dns_server,
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_management}"),
            ],
            &dir.path("challtestsrv.log"),
            &[],
        );
        let log = dir.path("pebble.log");
        let pebble = spawn(
            "pebble",
            &[
                "-config",
                dir.path("pebble.json").to_str().unwrap(),
                "-dnsserver",
                &dns_server,
            ],
            &log,
            // Real validation, without Pebble's random delays or refused nonces.
            &[
                ("PEBBLE_VA_ALWAYS_VALID", "0"),
                ("PEBBLE_VA_NOSLEEP", "1"),
                ("PEBBLE_WFE_NONCEREJECT", "0"),
            ],
        );
        let pebble = Self {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: format!("https://127.0.0.1:{management}"),
            log,
            https_root,
            _dns: dns,
            _pebble: pebble,
        };
        let client = pebble.client();
        let deadline = Instant::now() + PATIENCE;
        while client.get(&pebble.directory).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "Pebble did not start: {}",
                pebble.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pebble
    }

    /// A client for Pebble's own endpoints.
    fn client(&self) -> reqwest::Client {
        let root = std::fs::read(&self.https_root).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&root).unwrap()])
            .timeout(PATIENCE)
            .build()
            .unwrap()
    }

    /// The root that issues the certificates Pebble signs.
    async fn issuing_root(&self) -> reqwest::Certificate {
        let url = format!("{}/roots/0", self.management);
        let pem = self
            .client()
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        reqwest::Certificate::from_pem(&pem).unwrap()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// New orders Pebble has taken.
    fn orders(&self) -> usize {
        self.logs()
            .lines()
            .filter(|line| line.contains("POST /order-plz"))
            .count()
    }
}

/// The application on a listener, until stopped.
struct Running {
    app: App,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(config: Config, listener: TcpListener) -> Self {
        let app = App::builder().config(config).build().await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Self { app, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("stopped in time")
            .unwrap()
            .unwrap();
        drop(self.app);
    }
}

/// A client that trusts only `root`, connecting to `DOMAIN` at `addr`, without session reuse.
fn client(root: &reqwest::Certificate, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([root.clone()])
        .tls_info(true)
        .resolve(DOMAIN, addr)
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// The certificate a new client is served, or the error it gets.
async fn served(root: &reqwest::Certificate, addr: SocketAddr) -> Result<Vec<u8>, reqwest::Error> {
    let url = format!("https://{DOMAIN}:{}/healthz", addr.port());
    let response = client(root, addr).get(url).send().await?;
    assert_eq!(response.status(), 200);
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    Ok(info.peer_certificate().unwrap().to_vec())
}

/// Polls until a new client is served a certificate other than `old`.
async fn wait_for_new_certificate(
    root: &reqwest::Certificate,
    addr: SocketAddr,
    old: Option<&[u8]>,
    patience: Duration,
    pebble: &Pebble,
) -> Vec<u8> {
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(cert) = served(root, addr).await
            && Some(cert.as_slice()) != old
        {
            return cert;
        }
        assert!(
            Instant::now() < deadline,
            "no new certificate in time; Pebble's log:\n{}\nthe server's log:\n{}",
            pebble.logs(),
            LOG.get().map(Log::text).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server's log: kept for assertions and for the messages of failed ones.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

static LOG: OnceLock<Log> = OnceLock::new();

impl Log {
    fn install() -> Log {
        LOG.get_or_init(|| {
            let log = Log::default();
            // `fmt()`'s own bound (`info` unless set) before the targets' filter.
            let _ = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(log.clone())
                .with_max_level(LevelFilter::DEBUG)
                .finish()
                .with(Targets::new().with_target("shorts_runtime", LevelFilter::DEBUG))
                .try_init();
            log
        })
        .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;

    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

fn acme_config(platform: &MockPlatform, pebble: &Pebble, cache: PathBuf) -> Config {
    let mut acme = AcmeConfig::new([DOMAIN]);
    acme.directory = pebble.directory.parse().unwrap();
    acme.ca_root = Some(pebble.https_root.clone());
    acme.email = Some("ops@example.com".to_owned());
    acme.cache = cache;
    let mut config = platform.config();
    config.tls = TlsConfig::Acme(acme);
    config.shutdown_grace = Duration::from_secs(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_pebble_is_obtained_cached_and_renewed() {
    Log::install();
    let dir = TempDir::new("shorts-acme");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pebble = Pebble::start(&dir, addr.port(), &[]).await;
    let root = pebble.issuing_root().await;
    let platform = MockPlatform::start().await.unwrap();
    let cache = dir.path("acme");
    let config = acme_config(&platform, &pebble, cache.clone());

    // No certificate yet: obtained through a real TLS-ALPN-01 validation.
    let started = Instant::now();
    let running = Running::start(config.clone(), listener).await;
    let first = wait_for_new_certificate(&root, addr, None, PATIENCE, &pebble).await;
    eprintln!("first certificate from Pebble after {:?}", started.elapsed());
    assert_eq!(pebble.orders(), 1, "{}", pebble.logs());
    // Validated for real (Pebble's "always valid" switch is off): the server answers only
    // TLS-ALPN-01, on its own listener.
    assert!(
        pebble.logs().contains("set VALID by completed challenge"),
        "no validation: {}",
        pebble.logs()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    // A webhook over HTTPS, from a client that trusts only Pebble's root.
    let body = platform.webhook_body("o-acme", json!({"text": "certified"}));
    let mut request = client(&root, addr)
        .post(format!("https://{DOMAIN}:{}/shorts/echo", addr.port()))
        .body(body.to_string());
    for (name, value) in WEBHOOK_HEADERS {
        request = request.header(*name, *value);
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
    let callback = platform.wait_for("o-acme", PATIENCE).await.unwrap();
    assert_eq!(callback.body["result_text"], "certified");
    running.stop().await;

    // A restart serves the cached certificate at once, without a new order.
    let listener = TcpListener::bind(addr).await.unwrap();
    let running = Running::start(config, listener).await;
    assert_eq!(served(&root, addr).await.unwrap(), first);
    assert_eq!(pebble.orders(), 1, "{}", pebble.logs());

    // The certificate lives 24 s: renewed once 8 s are left, and the new one served.
    let renewed = wait_for_new_certificate(
        &root,
        addr,
        Some(&first),
        Duration::from_secs(VALIDITY_SECS + 10),
        &pebble,
    )
    .await;
    assert_ne!(renewed, first);
    assert_eq!(pebble.orders(), 2, "{}", pebble.logs());
    running.stop().await;
}

#[tokio::test]
async fn without_a_certificate_yet_handshakes_fail() {
    let dir = TempDir::new("shorts-acme");
    let platform = MockPlatform::start().await.unwrap();
    let mut acme = AcmeConfig::new([DOMAIN]);
    // A CA that cannot be reached: no certificate comes.
    acme.directory = format!("https://127.0.0.1:{}/dir", free_port()).parse().unwrap();
    acme.cache = dir.path("acme");
    let mut config = platform.config();
    config.tls = TlsConfig::Acme(acme);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = Running::start(config, listener).await;
    let client = reqwest::Client::builder()
        .resolve(DOMAIN, addr)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let body = platform.webhook_body("o-early", json!({"text": "too soon"}));
    let mut request = client
        .post(format!("https://{DOMAIN}:{}/shorts/echo", addr.port()))
        .body(body.to_string());
    for (name, value) in WEBHOOK_HEADERS {
        request = request.header(*name, *value);
    }
    let error = request.send().await.unwrap_err();
    let chain = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.to_lowercase().contains("access"), "{chain}");
    assert!(running.app.order("o-early").await.unwrap().is_none());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_order_is_logged_with_the_problem_document() {
    let log = Log::install();
    let dir = TempDir::new("shorts-acme");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pebble = Pebble::start(&dir, addr.port(), &[DOMAIN]).await;
    let platform = MockPlatform::start().await.unwrap();
    let config = acme_config(&platform, &pebble, dir.path("acme"));
    let running = Running::start(config, listener).await;
    let deadline = Instant::now() + PATIENCE;
    let refused = loop {
        let text = log.text();
        // Other tests share the log: this one's line names its directory.
        if let Some(line) = text
            .lines()
            .find(|line| line.contains("could not be obtained") && line.contains(&pebble.directory))
        {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no failure logged:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused.contains("urn:ietf:params:acme:error:rejectedIdentifier") && refused.contains("retry_in=30s"),
        "{refused}"
    );
    assert_eq!(pebble.orders(), 1);
    running.stop().await;
}
