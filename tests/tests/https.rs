//! HTTPS from certificate files: webhooks over TLS with the same auth, body limit and header
//! timeout as over plain HTTP; certificates read again when the files change and on `SIGHUP`;
//! unusable files refused at start with exit code 2.
//!
//! The connection cap applies to accepted TCP connections, before the handshake: a connection
//! whose handshake has not finished is idle, and gives its place to a new one at the cap.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use shorts_runtime::prelude::*;
use shorts_runtime::{Config, TlsConfig};
use shorts_tests::{PATIENCE, Served, TempDir, WEBHOOK_HEADERS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Deserialize)]
struct Input {
    text: String,
}

/// Echoes the text.
#[ai_short]
async fn echo(input: Input) -> Result<String> {
    Ok(input.text)
}

/// A test certificate authority.
struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
}

/// A leaf certificate: its chain's PEM, its key's PEM, and its DER to compare with what is served.
struct Leaf {
    chain: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "shorts test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A certificate for `localhost` signed by this CA.
    fn leaf(&self) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let issuer = rcgen::Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            chain: format!("{}{}", cert.pem(), self.pem),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client that trusts this CA only and opens a new connection for every request. (A
    /// client resumes TLS sessions: only a new client sees a new certificate.)
    fn client(&self, addr: SocketAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()])
            .tls_info(true)
            .resolve("localhost", addr)
            .pool_max_idle_per_host(0)
            .timeout(PATIENCE)
            .build()
            .unwrap()
    }
}

fn write_leaf(dir: &TempDir, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    std::fs::write(&cert, &leaf.chain).unwrap();
    std::fs::write(&key, &leaf.key).unwrap();
    (cert, key)
}

async fn serve_https(dir: &TempDir, leaf: &Leaf, configure: impl FnOnce(&mut Config)) -> Served {
    let (cert, key) = write_leaf(dir, leaf);
    Served::start_with(
        |config| {
            config.tls = TlsConfig::Files { cert, key };
            configure(config);
        },
        |builder| builder,
    )
    .await
}

/// The certificate the server presents to a new client.
async fn served_certificate(ca: &Ca, addr: SocketAddr) -> Vec<u8> {
    certificate_seen(&ca.client(addr), addr).await
}

/// The certificate `client` was presented for its connection.
async fn certificate_seen(client: &reqwest::Client, addr: SocketAddr) -> Vec<u8> {
    let url = format!("https://localhost:{}/healthz", addr.port());
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

/// Polls until the server presents `expected` to new clients.
async fn wait_for_certificate(ca: &Ca, addr: SocketAddr, expected: &[u8]) {
    let deadline = Instant::now() + PATIENCE;
    while served_certificate(ca, addr).await != expected {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(client: &reqwest::Client, addr: SocketAddr, headers: &[(&str, &str)], body: String) -> u16 {
    let mut request = client
        .post(format!("https://localhost:{}/shorts/echo", addr.port()))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn webhooks_over_https_keep_auth_and_the_body_limit() {
    let (dir, ca) = (TempDir::new("shorts-https"), Ca::new());
    let leaf = ca.leaf();
    let served = serve_https(&dir, &leaf, |config| config.max_body = 2048).await;
    let client = ca.client(served.addr);
    assert_eq!(served_certificate(&ca, served.addr).await, leaf.der);

    let body = served
        .platform
        .webhook_body("o-https", json!({"text": "over tls"}))
        .to_string();
    assert_eq!(
        post(&client, served.addr, WEBHOOK_HEADERS, body.clone()).await,
        200
    );
    assert_eq!(served.callback("o-https").await["result_text"], "over tls");

    let unauthenticated = [("content-type", "application/json")];
    let refused = served.platform.webhook_body("o-no-auth", json!({"text": "x"}));
    assert_eq!(
        post(&client, served.addr, &unauthenticated, refused.to_string()).await,
        401
    );
    let large = served
        .platform
        .webhook_body("o-large", json!({"text": "x".repeat(4096)}));
    assert_eq!(
        post(&client, served.addr, WEBHOOK_HEADERS, large.to_string()).await,
        413
    );

    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::builder().timeout(PATIENCE).build().unwrap();
    assert!(plain.get(served.url("/healthz")).send().await.is_err());
    // Nor does a client that does not trust the certificate.
    let strict = reqwest::Client::builder()
        .resolve("localhost", served.addr)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", served.addr.port());
    assert!(strict.get(url).send().await.is_err());
    served.stop().await;
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_closed_by_the_header_timeout() {
    let (dir, ca) = (TempDir::new("shorts-https"), Ca::new());
    let served = serve_https(&dir, &ca.leaf(), |config| {
        config.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    for opening in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let mut stream = tokio::net::TcpStream::connect(served.addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        let started = Instant::now();
        let mut buffer = [0_u8; 64];
        let closed = tokio::time::timeout(PATIENCE, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the stalled handshake was not closed");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // A real client still gets through.
    served_certificate(&ca, served.addr).await;
    served.stop().await;
}

#[tokio::test]
async fn at_the_cap_connections_stuck_before_the_handshake_give_way() {
    let (dir, ca) = (TempDir::new("shorts-https"), Ca::new());
    let served = serve_https(&dir, &ca.leaf(), |config| config.max_connections = Some(4)).await;
    // Four connections that never start their handshake fill the cap.
    let mut stuck = Vec::new();
    for _ in 0..4 {
        stuck.push(tokio::net::TcpStream::connect(served.addr).await.unwrap());
    }
    let client = ca.client(served.addr);
    let body = served
        .platform
        .webhook_body("o-cap-tls", json!({"text": "through"}))
        .to_string();
    assert_eq!(post(&client, served.addr, WEBHOOK_HEADERS, body).await, 200);
    assert_eq!(served.callback("o-cap-tls").await["result_text"], "through");
    // The oldest of them gave its place: the server closed it.
    let mut buffer = [0_u8; 64];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stuck[0].read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the oldest stuck connection was not closed");
    served.stop().await;
}

#[tokio::test]
async fn changed_files_are_served_to_new_connections_and_a_bad_pair_keeps_the_old_one() {
    let (dir, ca) = (TempDir::new("shorts-https"), Ca::new());
    let first = ca.leaf();
    let served = serve_https(&dir, &first, |_| {}).await;
    assert_eq!(served_certificate(&ca, served.addr).await, first.der);
    // A kept-alive connection opened before the change.
    let kept = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .tls_info(true)
        .resolve("localhost", served.addr)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    assert_eq!(certificate_seen(&kept, served.addr).await, first.der);

    let second = ca.leaf();
    write_leaf(&dir, &second);
    wait_for_certificate(&ca, served.addr, &second.der).await;
    // The open connection goes on: no request is dropped by the change.
    assert_eq!(certificate_seen(&kept, served.addr).await, first.der);
    let body = served
        .platform
        .webhook_body("o-after-reload", json!({"text": "still here"}));
    assert_eq!(
        post(&kept, served.addr, WEBHOOK_HEADERS, body.to_string()).await,
        200
    );
    served.callback("o-after-reload").await;

    // A key that does not match: the previous certificate stays. The files are checked every
    // second; three seconds of handshakes all see the previous certificate.
    std::fs::write(dir.path("key.pem"), ca.leaf().key).unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(served_certificate(&ca, served.addr).await, second.der);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let third = ca.leaf();
    write_leaf(&dir, &third);
    wait_for_certificate(&ca, served.addr, &third.der).await;
    served.stop().await;
}

/// Overwrites `path` in place with `text`, padded to its old length, and gives it back its old
/// modification time: a change only a re-read can see.
fn overwrite_unnoticed(path: &Path, text: &str) {
    let before = std::fs::metadata(path).unwrap();
    let old = usize::try_from(before.len()).unwrap();
    assert!(text.len() <= old, "no room for the new text");
    let text = format!("{text}{}", "\n".repeat(old - text.len()));
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::io::Write::write_all(&mut &file, text.as_bytes()).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
}

#[tokio::test]
async fn sighup_reads_the_files_again() {
    let (dir, ca) = (TempDir::new("shorts-https"), Ca::new());
    let first = ca.leaf();
    // Room for the second certificate's PEM, which may be a few bytes longer.
    let padded = Leaf {
        chain: format!("{}{}", first.chain, "\n".repeat(64)),
        key: format!("{}{}", first.key, "\n".repeat(64)),
        der: first.der.clone(),
    };
    let served = serve_https(&dir, &padded, |_| {}).await;
    assert_eq!(served_certificate(&ca, served.addr).await, first.der);

    let second = ca.leaf();
    overwrite_unnoticed(&dir.path("cert.pem"), &second.chain);
    overwrite_unnoticed(&dir.path("key.pem"), &second.key);
    // Unchanged size and time: the once-a-second check sees nothing. (Proving that nothing
    // happens takes a wait: two checks' worth.)
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(served_certificate(&ca, served.addr).await, first.der);

    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_certificate(&ca, served.addr, &second.der).await;
    served.stop().await;
}

/// Runs the `crashy` short's `serve` with `vars`, expecting it to exit at once.
fn serve_exits(vars: &[(&str, &Path)]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_crashy"));
    command
        .arg("serve")
        .env_clear()
        .env("SHORTS_CALLBACK_SECRET", "s")
        .env("SHORTS_WEBHOOK_AUTH", "x-api-key: k")
        .env("SHORTS_STORE", "memory")
        .env("SHORTS_BIND", "127.0.0.1:0")
        .env("SHORTS_ADMIN_BIND", "off");
    for (var, value) in vars {
        command.env(var, value);
    }
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`serve` with {vars:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn unusable_files_stop_the_server_with_one_line_and_code_2() {
    let (dir, ca) = (TempDir::new("shorts-https"), Ca::new());
    let (cert, key) = write_leaf(&dir, &ca.leaf());
    let other_key = dir.path("other-key.pem");
    std::fs::write(&other_key, ca.leaf().key).unwrap();
    let missing = dir.path("missing.pem");
    for (vars, expected) in [
        (
            vec![
                ("SHORTS_TLS_CERT", missing.as_path()),
                ("SHORTS_TLS_KEY", key.as_path()),
            ],
            "`SHORTS_TLS_CERT`",
        ),
        (
            vec![
                ("SHORTS_TLS_CERT", cert.as_path()),
                ("SHORTS_TLS_KEY", cert.as_path()),
            ],
            "`SHORTS_TLS_KEY`",
        ),
        (
            vec![
                ("SHORTS_TLS_CERT", cert.as_path()),
                ("SHORTS_TLS_KEY", other_key.as_path()),
            ],
            "does not match",
        ),
        (
            vec![("SHORTS_TLS_CERT", cert.as_path())],
            "`SHORTS_TLS_KEY` is not set",
        ),
    ] {
        let (code, stderr) = serve_exits(&vars);
        assert_eq!(code, Some(2), "{vars:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{stderr}"
        );
    }
}
