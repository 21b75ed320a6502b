//! Memory stays bounded when orders queue: orders waiting for a slot hold only their id, and the
//! webhook bodies held in memory stay under `SHORTS_MAX_PENDING_BYTES`, at intake and when orders
//! are picked up again after a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest as _;
use shorts_runtime::prelude::*;
use shorts_runtime::testing::{self, MockPlatform};
use shorts_tests::{PATIENCE, Served};
use tokio::sync::{Notify, mpsc};

const BIN: &str = env!("CARGO_BIN_EXE_queued");

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// POSTs `body` to `url` as the platform would, without a `Content-Length` when `chunked`.
async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>, chunked: bool) -> reqwest::Response {
    let body = if chunked {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(64 * KIB).map(|chunk| Ok(chunk.to_vec())).collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    } else {
        reqwest::Body::from(body)
    };
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-api-key", MockPlatform::WEBHOOK_KEY)
        .body(body)
        .send()
        .await
        .expect("webhook sent")
}

/// A webhook body for `order_id` whose input `file` is `size` bytes long.
fn large_body(platform: &MockPlatform, order_id: &str, size: usize) -> Vec<u8> {
    let mut body = platform.webhook_body(order_id, json!({ "file": "" }));
    // Spliced in rather than serialized: megabytes of JSON are slow to write in a debug build.
    let file = "A".repeat(size);
    body["inputs"] = json!({ "file": "FILE" });
    serde_json::to_string(&body)
        .expect("json")
        .replacen(r#""FILE""#, &format!(r#""{file}""#), 1)
        .into_bytes()
}

/// The in-process rule, step by step, with a cap of 1 MiB and a short with one slot that runs
/// until the test lets it finish.
#[tokio::test]
async fn webhooks_past_the_pending_bound_are_refused_and_waiting_orders_hold_nothing() {
    let (started, mut running) = mpsc::unbounded_channel::<String>();
    let finish = Arc::new(Notify::new());
    let release = Arc::clone(&finish);
    let short = Short::builder("hold", move |input: Value, order: Order| {
        let (started, finish) = (started.clone(), Arc::clone(&release));
        async move {
            let _ = started.send(order.id().to_owned());
            finish.notified().await;
            let len = input["file"].as_str().map_or(0, str::len);
            Ok::<_, Error>(format!("{len} bytes"))
        }
    })
    .concurrency(1);
    let served = Served::start_with(
        |config| config.max_pending_bytes = MIB,
        |builder| builder.without_registered().short(short),
    )
    .await;
    let url = served.url("/shorts/hold");
    let client = reqwest::Client::new();
    let platform = &served.platform;

    // A runs at once and keeps its body (600 KiB) until it finishes.
    let a = post(&client, &url, large_body(platform, "a", 600 * KIB), false).await;
    assert_eq!(a.status(), 200);
    let first = tokio::time::timeout(PATIENCE, running.recv())
        .await
        .expect("a runs");
    assert_eq!(first.as_deref(), Some("a"));

    // B (600 KiB) does not fit beside it, declared or chunked: 503 with Retry-After, nothing kept.
    for chunked in [false, true] {
        let b = post(&client, &url, large_body(platform, "b", 600 * KIB), chunked).await;
        assert_eq!(b.status(), 503, "chunked: {chunked}");
        let retry_after = b.headers().get("retry-after").and_then(|v| v.to_str().ok());
        assert!(
            retry_after.and_then(|v| v.parse::<u64>().ok()).is_some(),
            "{retry_after:?}"
        );
        assert!(served.app.order("b").await.expect("store").is_none());
    }

    // Orders that wait for the slot give their body back once committed: three of 300 KiB each
    // are taken one after the other beside A, more than the bound would hold together.
    for id in ["c", "d", "e"] {
        let waiting = post(&client, &url, large_body(platform, id, 300 * KIB), true).await;
        assert_eq!(waiting.status(), 200, "{id}");
    }

    // Once A finishes its body is given back: B is taken.
    finish.notify_one();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let b = post(&client, &url, large_body(platform, "b", 600 * KIB), false).await;
        if b.status() == 200 {
            break;
        }
        assert_eq!(b.status(), 503);
        assert!(Instant::now() < deadline, "b was never taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rest run one by one, each reading its body back from the store.
    for _ in 0..4 {
        tokio::time::timeout(PATIENCE, running.recv())
            .await
            .expect("the next order runs");
        finish.notify_one();
    }
    let callbacks = platform
        .wait_for_count(5, PATIENCE)
        .await
        .expect("five callbacks");
    let mut results: Vec<(String, String)> = callbacks
        .iter()
        .map(|c| {
            assert!(c.ok(), "{:?}", c.body);
            (
                c.order_id().to_owned(),
                c.body["result_text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    results.sort();
    let expected: Vec<(String, String)> = [("a", 600), ("b", 600), ("c", 300), ("d", 300), ("e", 300)]
        .into_iter()
        .map(|(id, kib)| (id.to_owned(), format!("{} bytes", kib * KIB)))
        .collect();
    assert_eq!(results, expected);

    // A body larger than the whole bound (but within SHORTS_MAX_BODY) is taken when nothing else
    // is pending.
    let large = post(&client, &url, large_body(platform, "f", 3 * MIB / 2), false).await;
    assert_eq!(large.status(), 200);
    tokio::time::timeout(PATIENCE, running.recv())
        .await
        .expect("f runs");
    finish.notify_one();
    assert!(platform.wait_for("f", PATIENCE).await.is_some_and(|c| c.ok()));
    served.stop().await;
}

/// The bound the real binary is run with.
const CAP: usize = 64 * MIB;
/// Slack allowed above the bound for everything else the process holds at the peak: the running
/// handler's copies of its input, the store's buffers, the allocator's free lists.
const MARGIN: usize = 64 * MIB;
/// Orders sent, and the size of each one's file.
const ORDERS: usize = 200;
const FILE: usize = 8 * MIB;

/// One run of the short's binary.
struct Server {
    child: Child,
    port: u16,
    /// Resident memory once it listened, before any order.
    idle_kib: usize,
}

impl Server {
    async fn start(env: &[(&str, String)]) -> Self {
        let listener = testing::Listener::bind().expect("a socket");
        let port = listener.addr().port();
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "error")
            .env("SHORTS_ADMIN_BIND", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        listener.pass_to(&mut command).expect("pass the socket");
        let child = command.spawn().expect("spawn the server");
        shorts_tests::process::wait_serving(port).await;
        let idle_kib = status_kib(child.id(), "VmRSS:");
        Server {
            child,
            port,
            idle_kib,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/shorts/upload", self.port)
    }

    /// The peak resident memory so far.
    fn peak_kib(&self) -> usize {
        status_kib(self.child.id(), "VmHWM:")
    }

    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` line of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn env(platform: &MockPlatform, db: &Path, cap: usize, sleep_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("SHORTS_STORE", format!("sqlite://{}", db.display())),
        ("SHORTS_CALLBACK_SECRET", platform.secret().to_owned()),
        ("SHORTS_CALLBACK_URL", platform.callback_url()),
        (
            "SHORTS_WEBHOOK_AUTH",
            format!("x-api-key: {}", MockPlatform::WEBHOOK_KEY),
        ),
        ("SHORTS_MAX_PENDING_BYTES", format!("{}MiB", cap / MIB)),
        ("SHORTS_LEASE", "1s".to_owned()),
        ("SHORTS_POLL_INTERVAL", "100ms".to_owned()),
        ("QUEUED_SLEEP_MS", sleep_ms.to_string()),
        // The bound is on payloads. What glibc keeps free in each of its arenas (up to 32 MiB each
        // with `run()`'s allocator tuning, one arena per busy thread) is not a payload, and with
        // the default arena count it alone can fill the test's margin; two arenas keep it small.
        ("MALLOC_ARENA_MAX", "2".to_owned()),
    ]
}

/// A fresh directory for a database of 1.6 GB: in memory (`/dev/shm`) where there is one, so that
/// the test waits on neither the disk nor its fsyncs; its pages are not the server's.
fn temp_dir(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("shorts-memory-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// What the webhooks of a burst were answered.
struct Burst {
    accepted: HashSet<String>,
    refused: usize,
}

/// Sends `ORDERS` webhooks of `FILE` bytes, `at_once` at a time; with `persist`, each refused one
/// is sent again until it is taken (bounded). Every refusal must be a 503 with `Retry-After`.
async fn burst(platform: &MockPlatform, url: &str, prefix: &str, at_once: usize, persist: bool) -> Burst {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let permits = Arc::new(tokio::sync::Semaphore::new(at_once));
    let mut senders = Vec::with_capacity(ORDERS);
    for n in 0..ORDERS {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("permit");
        let order_id = format!("{prefix}-{n:03}");
        let body = bytes::Bytes::from(large_body(platform, &order_id, FILE));
        let (client, url) = (client.clone(), url.to_owned());
        senders.push(tokio::spawn(async move {
            let _permit = permit;
            let mut refused = 0;
            for _ in 0..2000 {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-api-key", MockPlatform::WEBHOOK_KEY)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("webhook sent");
                match response.status().as_u16() {
                    200 => return (Some(order_id), refused),
                    503 => {
                        assert!(
                            response.headers().contains_key("retry-after"),
                            "a 503 without Retry-After"
                        );
                        refused += 1;
                        if !persist {
                            return (None, refused);
                        }
                    }
                    status => panic!("{order_id}: unexpected status {status}"),
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("{order_id} was never taken");
        }));
    }
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for sender in senders {
        let (order_id, refusals) = sender.await.expect("sender");
        accepted.extend(order_id);
        refused += refusals;
    }
    Burst { accepted, refused }
}

/// Waits until every order of `ids` has a successful callback carrying its file's length.
async fn delivered(platform: &MockPlatform, ids: &HashSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let callbacks = platform.callbacks();
        let done: HashSet<String> = callbacks
            .iter()
            .filter(|c| ids.contains(c.order_id()))
            .map(|c| {
                assert!(c.ok(), "{:?}", c.body);
                assert_eq!(c.body["result_text"], format!("{FILE} bytes"));
                c.order_id().to_owned()
            })
            .collect();
        if done.len() == ids.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} orders delivered",
            done.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check_peak(what: &str, server: &Server) {
    let peak = server.peak_kib();
    let bound = (CAP + MARGIN) / KIB + server.idle_kib;
    println!(
        "{what}: peak RSS {} MiB (idle {} MiB), bound {} MiB",
        peak / 1024,
        server.idle_kib / 1024,
        bound / 1024
    );
    assert!(peak < bound, "{what}: peak RSS {peak} KiB over {bound} KiB");
}

/// 200 webhooks of 8 MiB for a short with one slot: memory stays under the bound while they queue;
/// then 200 such orders left in the store by a `kill -9` are picked up within the same bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_and_reclaimed_orders_stay_within_the_pending_bound() {
    let platform = MockPlatform::start().await.expect("mock");

    // Intake: 200 orders of 8 MiB, 32 at a time, refused ones not sent again.
    let dir = temp_dir("queue");
    let server = Server::start(&env(&platform, &dir.join("orders.db"), CAP, 20)).await;
    let started = Instant::now();
    let sent = burst(&platform, &server.url(), "q", 32, false).await;
    println!(
        "queue: {} accepted, {} refused with 503 in {:.1} s",
        sent.accepted.len(),
        sent.refused,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(sent.accepted.len() + sent.refused, ORDERS);
    assert!(!sent.accepted.is_empty());
    delivered(&platform, &sent.accepted, Duration::from_secs(120)).await;
    check_peak("queue", &server);
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);

    // Reclaim: 200 orders stored behind one that never finishes (with room to take them quickly),
    // then kill -9 and a restart with the bound.
    let dir = temp_dir("reclaim");
    let db = dir.join("orders.db");
    let server = Server::start(&env(&platform, &db, 4 * CAP, 600_000)).await;
    let stored = burst(&platform, &server.url(), "r", 16, true).await;
    assert_eq!(stored.accepted.len(), ORDERS);
    server.kill();
    let server = Server::start(&env(&platform, &db, CAP, 20)).await;
    let started = Instant::now();
    delivered(&platform, &stored.accepted, Duration::from_secs(120)).await;
    println!(
        "reclaim: {} orders delivered after the restart in {:.1} s",
        ORDERS,
        started.elapsed().as_secs_f64()
    );
    check_peak("reclaim", &server);
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A text result too large for a callback, 50 MB, is uploaded as `result.txt` from the memory it
/// is already in: the server's peak grows by the text and a margin, not by a second copy of it
/// (an escaped callback body or a JSON value of it would double the growth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_text_result_is_uploaded_without_a_copy() {
    const TEXT: usize = 50_000_000;
    const TEXT_MARGIN: usize = 16 * MIB;
    let platform = MockPlatform::start().await.expect("mock");
    let dir = temp_dir("long-text");
    let server = Server::start(&env(&platform, &dir.join("orders.db"), CAP, 0)).await;
    let url = format!("http://127.0.0.1:{}/shorts/long_text", server.port);
    let webhook = platform.webhook_body("o-50mb", json!({ "bytes": TEXT }));
    let response = post(
        &reqwest::Client::new(),
        &url,
        webhook.to_string().into_bytes(),
        false,
    )
    .await;
    assert_eq!(response.status(), 200);
    let callback = platform
        .wait_for("o-50mb", Duration::from_secs(120))
        .await
        .expect("the callback");
    assert_eq!(callback.body["ok"], true, "{}", callback.body);
    assert_eq!(callback.body["output_type"], "file", "{}", callback.body);
    let entry = &callback.body["files"][0];
    assert!(
        entry["filename"]
            .as_str()
            .is_some_and(|name| name.ends_with("result.txt")),
        "{entry}"
    );
    assert_eq!(entry["mime_type"], "text/plain", "{entry}");
    let objects = platform.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].size, TEXT as u64);
    assert_eq!(objects[0].content_type, "text/plain");
    let text = "a".repeat(TEXT);
    let digest: String = sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(objects[0].sha256, digest, "the text byte for byte");
    let grown = (server.peak_kib().saturating_sub(server.idle_kib)) * KIB;
    println!("50 MB text: peak {} MiB above idle", grown / MIB);
    assert!(
        grown < TEXT + TEXT_MARGIN,
        "the server's peak grew by {} MiB for a text of {} MiB",
        grown / MIB,
        TEXT / MIB
    );
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
