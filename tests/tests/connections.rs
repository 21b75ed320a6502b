//! Connections: the cap, the idle and header timeouts, many idle sockets against a small
//! open-file limit, and where `serve --mock` listens.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use shorts_runtime::prelude::*;
use shorts_runtime::testing::{self, MockPlatform};
use shorts_tests::Served;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Answers with the text.
#[ai_short]
async fn echo(input: serde_json::Value) -> Result<String> {
    Ok(input.to_string())
}

/// A short binary of this crate, run as a child process.
const BIN: &str = env!("CARGO_BIN_EXE_crashy");

/// Reads until the server closes the connection; what it sent before.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!(
                "the connection was still open after {within:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0) | Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Reads one `GET /healthz` answer (its body is `{"ok":true}`).
async fn read_health(stream: &mut TcpStream) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    while !received.ends_with(br#"{"ok":true}"#) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..n]);
    }
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received)
    );
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";

/// A webhook for `order_id` whose body is still to come: its request is in flight once the
/// server asks for the body (`100 Continue`). Returns the stream and the body to send.
async fn in_flight(served: &Served, order_id: &str) -> (TcpStream, String) {
    let body = served.platform.webhook_body(order_id, json!({})).to_string();
    let mut stream = TcpStream::connect(served.addr).await.expect("connect");
    let head = format!(
        "POST /shorts/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {}\r\nexpect: 100-continue\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        MockPlatform::WEBHOOK_KEY,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut buffer = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("100 Continue in time")
        .expect("read");
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buffer[..n])
    );
    (stream, body)
}

#[tokio::test]
async fn past_the_cap_with_every_connection_busy_a_new_one_is_closed_at_once() {
    let served = Served::start_with(|config| config.max_connections = Some(4), |b| b).await;
    let mut busy = Vec::new();
    for i in 0..4 {
        busy.push(in_flight(&served, &format!("o-busy-{i}")).await);
    }
    let mut refused = TcpStream::connect(served.addr).await.expect("connect");
    let started = Instant::now();
    let received = read_to_close(&mut refused, Duration::from_secs(5)).await;
    assert!(received.is_empty(), "{}", String::from_utf8_lossy(&received));
    eprintln!("refused connection closed after {:?}", started.elapsed());

    // Once a request ends, its connection's place is there for the next one.
    let (mut first, body) = busy.remove(0);
    first.write_all(body.as_bytes()).await.expect("the body");
    let answer = read_to_close(&mut first, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let order = served.platform.webhook_body("o-after-cap", json!({}));
    assert_eq!(
        served
            .platform
            .send_webhook(&served.url("/shorts/echo"), &order)
            .await
            .expect("sent"),
        200
    );
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    let served = Served::start_with(|config| config.max_connections = Some(4), |b| b).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(served.addr).await.expect("connect"));
    }
    let body = served.platform.webhook_body("o-room", json!({"text": "room"}));
    let started = Instant::now();
    let status = served
        .platform
        .send_webhook(&served.url("/shorts/echo"), &body)
        .await
        .expect("sent");
    assert_eq!(status, 200);
    eprintln!("webhook at the cap answered in {:?}", started.elapsed());
    // The oldest idle connection gave its place.
    let received = read_to_close(&mut idle[0], Duration::from_secs(5)).await;
    assert!(received.is_empty());
    served.callback("o-room").await;
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let idle = Duration::from_millis(1500);
    let served = Served::start_with(
        |config| {
            config.idle_timeout = idle;
            config.header_read_timeout = Duration::from_millis(300);
        },
        |b| b,
    )
    .await;
    let mut stream = TcpStream::connect(served.addr).await.expect("connect");
    stream.write_all(HEALTH).await.expect("write");
    read_health(&mut stream).await;
    // Longer than the header timeout: an idle connection is not a slow request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream.write_all(HEALTH).await.expect("write");
    read_health(&mut stream).await;
    let answered = Instant::now();
    let received = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert!(received.is_empty());
    let open = answered.elapsed();
    eprintln!("idle keep-alive closed after {open:?}");
    assert!(open >= idle - Duration::from_millis(50), "closed after {open:?}");
}

#[tokio::test]
async fn a_stalled_request_on_a_kept_alive_connection_has_the_header_timeout() {
    let served = Served::start_with(
        |config| {
            config.idle_timeout = Duration::from_secs(60);
            config.header_read_timeout = Duration::from_millis(300);
        },
        |b| b,
    )
    .await;
    let mut stream = TcpStream::connect(served.addr).await.expect("connect");
    stream.write_all(HEALTH).await.expect("write");
    read_health(&mut stream).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    // Cut off long before the idle timeout.
    let received = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert!(received.is_empty(), "{}", String::from_utf8_lossy(&received));
}

/// A child process's stderr, collected by a thread.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn collect(stderr: std::process::ChildStderr) -> Self {
        let log = Log::default();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut text = lines.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        log
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// The first line containing `needle`, waiting up to 20 s for it.
    async fn line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.text().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} in:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Kills the child if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    /// Sends SIGTERM and returns the exit code (bounded wait).
    async fn terminate(&mut self) -> Option<i32> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The short binary with `args` and a clean environment; under `sh -c 'ulimit -n N; exec ...'`
/// when `open_files` is given.
fn short(open_files: Option<u32>, args: &[&str]) -> Command {
    let mut command = match open_files {
        Some(limit) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(BIN)
                .args(args);
            sh
        }
        None => {
            let mut bin = Command::new(BIN);
            bin.args(args);
            bin
        }
    };
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SHORTS_ADMIN_BIND", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_sockets_do_not_keep_webhooks_out() {
    const SOCKETS: usize = 1_000;
    const WEBHOOKS: usize = 20;
    // This process holds the client ends: make sure it may (the server's limit is the child's).
    let needed = (SOCKETS + 512) as u64;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    if soft < needed {
        assert!(
            hard >= needed,
            "this test needs {needed} open files; the hard limit is {hard}"
        );
        rlimit::increase_nofile_limit(needed).expect("raise this process's open-file limit");
    }

    let platform = MockPlatform::start().await.expect("mock");
    let listener = testing::Listener::bind().expect("a socket");
    let port = listener.addr().port();
    let mut command = short(Some(256), &["serve"]);
    listener.pass_to(&mut command).expect("pass the socket");
    command
        .env("SHORTS_STORE", "memory")
        .env("SHORTS_CALLBACK_SECRET", platform.secret())
        .env("SHORTS_CALLBACK_URL", platform.callback_url())
        .env(
            "SHORTS_WEBHOOK_AUTH",
            format!("x-api-key: {}", MockPlatform::WEBHOOK_KEY),
        );
    let mut child = Child(command.spawn().expect("spawn"));
    let log = Log::collect(child.0.stderr.take().expect("stderr"));
    shorts_tests::process::wait_serving(port).await;
    let limits = log.line("connection limits listener=\"webhooks\"").await;
    assert!(limits.contains("max_connections=192"), "{limits}");
    assert!(log.line("open-file limit").await.contains("limit=256"));

    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        sockets.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
    }
    let url = format!("http://127.0.0.1:{port}/shorts/work");
    // A new connection for every webhook, as the platform's would be.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut slowest = Duration::ZERO;
    for i in 0..WEBHOOKS {
        // More idle sockets keep arriving meanwhile.
        for _ in 0..10 {
            sockets.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
        }
        let body = platform.webhook_body(&format!("o-idle-{i}"), json!({}));
        let started = Instant::now();
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-api-key", MockPlatform::WEBHOOK_KEY)
            .body(body.to_string())
            .send();
        let sent = tokio::time::timeout(Duration::from_secs(5), request).await;
        let took = started.elapsed();
        let status = sent
            .unwrap_or_else(|_| panic!("webhook {i} not answered in 5 s:\n{}", log.text()))
            .unwrap_or_else(|e| panic!("webhook {i}: {e}:\n{}", log.text()))
            .status()
            .as_u16();
        assert_eq!(status, 200, "webhook {i}");
        assert!(took < Duration::from_secs(1), "webhook {i} took {took:?}");
        slowest = slowest.max(took);
    }
    eprintln!(
        "{} sockets opened against `ulimit -n 256`; {WEBHOOKS} webhooks answered 200, slowest {slowest:?}",
        sockets.len()
    );
    assert!(
        platform
            .wait_for_count(WEBHOOKS, Duration::from_secs(20))
            .await
            .is_some(),
        "every order delivered"
    );

    // Hundreds of connections closed, a few lines with their counts.
    let made_room = log.line("idle connections closed to make room").await;
    assert!(made_room.contains("count="), "{made_room}");
    let text = log.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    eprintln!("{}", warnings.join("\n"));
    let warnings = warnings.len();
    assert!(warnings <= 10, "{warnings} warnings:\n{text}");
    assert!(!text.contains("accept failed"), "{text}");
    drop(sockets);
    assert_eq!(child.terminate().await, Some(0), "{}", log.text());
}

/// A non-loopback IPv4 address of this machine, if it has one.
fn lan_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route's source address.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn serve_mock_listens_on_this_machine_only() {
    let port = shorts_tests::process::free_port();
    let mut command = short(None, &["serve", "--mock"]);
    command.env("PORT", port.to_string());
    let mut child = Child(command.spawn().expect("spawn"));
    let log = Log::collect(child.0.stderr.take().expect("stderr"));
    let serving = log.line(" serving ").await;
    assert!(serving.contains(&format!("addr=127.0.0.1:{port}")), "{serving}");
    if let Some(ip) = lan_address() {
        let connected = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect((ip, port))).await;
        assert!(
            !matches!(connected, Ok(Ok(_))),
            "reachable on {ip}:{port}, not only on 127.0.0.1"
        );
    }
    assert_eq!(child.terminate().await, Some(0), "{}", log.text());
}

#[tokio::test]
async fn serve_mock_listens_where_shorts_bind_says() {
    let port = shorts_tests::process::free_port();
    let mut command = short(None, &["serve", "--mock"]);
    command.env("SHORTS_BIND", format!("0.0.0.0:{port}"));
    let mut child = Child(command.spawn().expect("spawn"));
    let log = Log::collect(child.0.stderr.take().expect("stderr"));
    let serving = log.line(" serving ").await;
    assert!(serving.contains(&format!("addr=0.0.0.0:{port}")), "{serving}");
    assert_eq!(child.terminate().await, Some(0), "{}", log.text());
}

/// A trial never asks a CA for a certificate, even with the go-live settings in its environment:
/// it serves plain HTTP, and says it ignored them.
#[tokio::test]
async fn serve_mock_ignores_the_acme_settings() {
    let port = shorts_tests::process::free_port();
    let mut command = short(None, &["serve", "--mock"]);
    command
        .env("PORT", port.to_string())
        .env("SHORTS_ACME_DOMAINS", "shorts.invalid")
        .env("SHORTS_ACME_EMAIL", "you@shorts.invalid");
    let mut child = Child(command.spawn().expect("spawn"));
    let log = Log::collect(child.0.stderr.take().expect("stderr"));
    let ignored = log.line("SHORTS_ACME_DOMAINS is ignored").await;
    assert!(ignored.contains("WARN"), "{ignored}");
    let serving = log.line(" serving ").await;
    assert!(serving.contains("scheme=\"http\""), "{serving}");
    assert_eq!(child.terminate().await, Some(0), "{}", log.text());
    assert!(!log.text().contains("requesting a certificate"), "{}", log.text());
}
