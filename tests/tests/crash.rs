//! Crash harness: the real binary under load, killed with SIGKILL at random moments, with a flaky
//! platform. Every order answered 2xx must end with a callback the platform accepted; every
//! callback of an order carries the same result (an eighth of them over 64 KiB).
//!
//! `SHORTS_CRASH_ORDERS` (default 2000) and `SHORTS_CRASH_KILLS` (default 20) set the size.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shorts_runtime::testing::MockPlatform;
use shorts_tests::process::{self, Instance, common_env};

const BIN: &str = env!("CARGO_BIN_EXE_crashy");

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the platform saw, per order.
struct Figures {
    sent: usize,
    acked: usize,
    delivered: usize,
    lost: Vec<String>,
    duplicates: usize,
    failed: usize,
    runs: BTreeMap<usize, usize>,
    inconsistent: Vec<String>,
    kills: usize,
    seconds: f64,
}

impl Figures {
    fn print(&self, name: &str) {
        let runs: Vec<String> = self
            .runs
            .iter()
            .map(|(runs, orders)| format!("{runs}x: {orders}"))
            .collect();
        println!(
            "crash harness ({name}): sent {}, acked {}, delivered {}, lost {}, duplicate callbacks {}, \
             ok:false {}, kills {}, handler runs per order [{}], differing results {}, {:.1} s",
            self.sent,
            self.acked,
            self.delivered,
            self.lost.len(),
            self.duplicates,
            self.failed,
            self.kills,
            runs.join(", "),
            self.inconsistent.len(),
            self.seconds
        );
    }
}

/// Sends `orders` webhooks (32 at a time) to the instances, each until one answers 2xx (bounded),
/// while `kill` kills and restarts instances; then waits for every acknowledged order's callback.
async fn run_harness(
    platform: &MockPlatform,
    instances: Vec<Instance>,
    orders: usize,
    kills: usize,
    kill_at_once: usize,
    runs_file: &Path,
) -> Figures {
    let started = Instant::now();
    let ports: Vec<u16> = instances.iter().map(Instance::port).collect();
    let instances = Arc::new(Mutex::new(instances));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    let killer = {
        let instances = Arc::clone(&instances);
        tokio::spawn(async move {
            for round in 0..kills {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(150..600))).await;
                {
                    let mut alive = instances.lock().unwrap();
                    let count = alive.len();
                    let victims = fastrand::usize(1..=kill_at_once.min(count));
                    let first = fastrand::usize(..count) + round;
                    for i in 0..victims {
                        alive[(first + i) % count].kill();
                    }
                }
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..150))).await;
                for instance in instances.lock().unwrap().iter_mut() {
                    if instance.is_killed() {
                        instance.start();
                    }
                }
            }
        })
    };

    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    let mut senders = Vec::with_capacity(orders);
    for n in 0..orders {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("permit");
        let order_id = format!("order-{n:05}");
        // Every eighth answer is a 100 KB text: its callback body goes to a spool file (SQLite),
        // and a callback sent again after a kill must be read back from it byte for byte.
        let pad = if n % 8 == 0 { 100_000 } else { 0 };
        let inputs = json!({"sleep_ms": fastrand::u64(0..20), "answer_bytes": pad});
        let body = platform.webhook_body(&order_id, inputs);
        let (client, acked, ports) = (client.clone(), Arc::clone(&acked), ports.clone());
        senders.push(tokio::spawn(async move {
            let _permit = permit;
            for attempt in 0..400 {
                let port = ports[(n + attempt) % ports.len()];
                let sent = client
                    .post(format!("http://127.0.0.1:{port}/shorts/work"))
                    .header("content-type", "application/json")
                    .header("x-api-key", MockPlatform::WEBHOOK_KEY)
                    .body(body.to_string())
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    acked.lock().unwrap().insert(order_id);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    killer.await.expect("killer");
    let kills_done = kills;

    // Every acknowledged order must now be delivered by the surviving instances.
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let delivered: HashSet<String> = platform
            .callbacks()
            .iter()
            .map(|c| c.order_id().to_owned())
            .collect();
        if acked.is_subset(&delivered) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let late duplicates arrive before counting them.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let callbacks = platform.callbacks();
    let mut bodies: HashMap<String, Vec<Value>> = HashMap::new();
    for callback in &callbacks {
        bodies
            .entry(callback.order_id().to_owned())
            .or_default()
            .push(callback.body.clone());
    }
    let mut runs_per_order: HashMap<String, usize> = HashMap::new();
    for line in std::fs::read_to_string(runs_file).unwrap_or_default().lines() {
        *runs_per_order.entry(line.to_owned()).or_default() += 1;
    }
    let mut runs = BTreeMap::new();
    for count in runs_per_order.values() {
        *runs.entry(*count).or_default() += 1;
    }
    let mut lost: Vec<String> = acked
        .iter()
        .filter(|id| !bodies.contains_key(*id))
        .cloned()
        .collect();
    lost.sort();
    let inconsistent = bodies
        .iter()
        .filter(|(_, bodies)| bodies.iter().any(|b| b != &bodies[0]))
        .map(|(id, _)| id.clone())
        .collect();
    Figures {
        sent: orders,
        acked: acked.len(),
        delivered: acked.iter().filter(|id| bodies.contains_key(*id)).count(),
        lost,
        duplicates: callbacks.iter().filter(|c| c.duplicate).count(),
        failed: bodies.values().filter(|b| b[0]["ok"] == false).count(),
        runs,
        inconsistent,
        kills: kills_done,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    process::temp_dir("shorts-crash", name)
}

fn check(figures: &Figures, name: &str) {
    figures.print(name);
    assert!(
        figures.lost.is_empty(),
        "lost orders: {:?}",
        &figures.lost[..figures.lost.len().min(20)]
    );
    assert_eq!(
        figures.acked, figures.sent,
        "every order was eventually acknowledged"
    );
    assert!(
        figures.inconsistent.is_empty(),
        "an order's stored result changed: {:?}",
        figures.inconsistent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_loses_no_acknowledged_order_under_kill_9() {
    let orders = setting("SHORTS_CRASH_ORDERS", 2000);
    let kills = setting("SHORTS_CRASH_KILLS", 20);
    let dir = temp_dir("sqlite");
    let runs_file = dir.join("runs.log");
    let platform = MockPlatform::builder().flaky(0.2).start().await.expect("mock");
    let store = format!("sqlite://{}", dir.join("orders.db").display());
    let instance = Instance::new(BIN, common_env(&platform, &store, &runs_file));
    let figures = run_harness(&platform, vec![instance], orders, kills, 1, &runs_file).await;
    check(&figures, "sqlite, 1 instance");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_loses_no_acknowledged_order_with_three_instances() {
    let orders = setting("SHORTS_CRASH_ORDERS", 2000);
    let kills = setting("SHORTS_CRASH_KILLS", 20);
    let url = std::env::var("SHORTS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("shorts_crash_{}", std::process::id());
    psql(
        &url,
        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"),
    );
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = format!("{url}{separator}options=-c%20search_path%3D{schema}");

    let dir = temp_dir("postgres");
    let runs_file = dir.join("runs.log");
    let platform = MockPlatform::builder().flaky(0.2).start().await.expect("mock");
    let env = common_env(&platform, &store, &runs_file);
    let instances: Vec<Instance> = (0..3).map(|_| Instance::new(BIN, env.clone())).collect();
    let figures = run_harness(&platform, instances, orders, kills, 2, &runs_file).await;
    check(&figures, "postgres, 3 instances");
    psql(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE;"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs SQL on the test PostgreSQL (to create and drop the harness's schema).
fn psql(url: &str, sql: &str) {
    let url = url.to_owned();
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let pool = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {url} is unreachable ({e}); set SHORTS_TEST_POSTGRES_URL")
                });
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .expect("schema");
            });
    })
    .join()
    .expect("schema thread");
}

#[tokio::test]
async fn an_order_that_ends_the_process_three_times_fails_instead_of_crashing_it_forever() {
    let dir = temp_dir("abort");
    let runs_file = dir.join("runs.log");
    let platform = MockPlatform::start().await.expect("mock");
    let store = format!("sqlite://{}", dir.join("orders.db").display());
    let mut env = common_env(&platform, &store, &runs_file);
    env.push(("SHORTS_LEASE".to_owned(), "300ms".to_owned()));
    let mut instance = Instance::new(BIN, env);
    let port = instance.port();
    let body = platform.webhook_body("o-abort", json!({"abort": true}));
    let client = reqwest::Client::new();
    // The webhook is committed before it is answered; the run may end the process first.
    for _ in 0..100 {
        let sent = client
            .post(format!("http://127.0.0.1:{port}/shorts/work"))
            .header("content-type", "application/json")
            .header("x-api-key", MockPlatform::WEBHOOK_KEY)
            .body(body.to_string())
            .send()
            .await;
        if sent.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Restart after each crash until the order ends (bounded: 3 crashes, then the failure).
    let deadline = Instant::now() + Duration::from_secs(60);
    let callback = loop {
        if let Some(callback) = platform.wait_for("o-abort", Duration::from_millis(100)).await {
            break callback;
        }
        assert!(Instant::now() < deadline, "the order never ended");
        if instance.exited().is_some() {
            instance.kill();
            instance.start();
        }
    };
    assert_eq!(
        callback.body,
        json!({"ok": false, "order_id": "o-abort",
               "error": "the short stopped the server 3 times while running this order"})
    );
    let runs = std::fs::read_to_string(&runs_file).unwrap_or_default();
    assert_eq!(runs.lines().count(), 3, "three runs, each ended by the short");
    assert_eq!(instance.starts(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}
