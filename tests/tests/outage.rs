//! Outages of the order store under load, with the real binary: a PostgreSQL cluster of the test's
//! own stopped for 10 s under two instances, and SQLite on a disk that fills up. Every order
//! answered 200 must end with a callback the platform accepted; an order refused meanwhile is
//! answered 503 (the platform sends it again); no instance exits; once the store is back, new
//! orders go through on every instance. In process, a store that refuses one order's writes for a
//! while shows the same without timing luck.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use shorts_runtime::testing::{self, MockPlatform};
use shorts_runtime::{Error, Order, OrderState, Short, StoreConfig};
use shorts_tests::process::{Instance, common_env, free_port, temp_dir};
use shorts_tests::{PATIENCE, Served};
use tokio::task::JoinSet;

const BIN: &str = env!("CARGO_BIN_EXE_crashy");

/// How long the database is down.
const OUTAGE: Duration = Duration::from_secs(10);

/// Time a webhook gets for its answer: more than the store's longest wait for a connection, so
/// that a refusal shows as its status rather than as the client giving up.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `command`, as the `postgres` OS user when this process is root (PostgreSQL refuses to run
/// as root).
fn as_postgres(program: &str, args: &[&str]) -> Output {
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    };
    command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run {program}: {e}"))
}

fn succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A PostgreSQL cluster of the test's own, in a temporary directory, on a free port; stopped and
/// deleted when dropped.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    /// Creates the cluster (`initdb`) and starts it.
    fn start() -> Self {
        let dir = temp_dir("shorts-outage", "pg");
        if is_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .output()
                .expect("chown");
            succeeded("chown of the cluster's directory", &chown);
        }
        let cluster = Cluster {
            dir,
            port: free_port(),
        };
        let data = cluster.data();
        let initdb = as_postgres(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        succeeded("initdb", &initdb);
        cluster.resume();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Starts the server and waits until it accepts connections.
    fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        let start = as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        succeeded("pg_ctl start", &start);
    }

    /// Stops the server at once: open connections are cut, nothing is shut down cleanly.
    fn stop(&self) {
        let stop = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "-t", "30", "stop"],
        );
        succeeded("pg_ctl stop", &stop);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Fails harmlessly when the server is already stopped.
        let _ = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "-t", "30", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `tmpfs` of a few MiB mounted for the test; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a `tmpfs` of `size` (as `mount -o size=` reads it) on a new directory; the reason
    /// when this machine does not allow it.
    fn mount(size: &str) -> Result<Self, String> {
        if !is_root() {
            return Err("mounting a tmpfs needs root".to_owned());
        }
        let dir = std::env::temp_dir().join(format!("shorts-outage-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("could not run mount: {e}"))?;
        if !mounted.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&mounted.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    /// Writes a file until the filesystem is full; returns the file's path and size.
    fn fill(&self) -> (PathBuf, u64) {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler file");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        // Bounded by the filesystem's size; then page by page for what is left.
        for size in [chunk.len(), 4096] {
            for _ in 0..1 << 20 {
                match file.write(&chunk[..size]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => written += n as u64,
                }
            }
        }
        (path, written)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file open: detach it now, freed once released.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A webhook sent, and its answer (`None`: no answer in time, or the connection failed).
#[derive(Debug, Clone)]
struct Sent {
    order_id: String,
    status: Option<u16>,
}

/// A steady stream of new orders: one every `every`, in turn to each of `ports`, each sent once.
struct Load {
    running: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Orders run the short for up to `run` (from 0 to just under it, in turn) and carry `pad`
    /// bytes of inputs the short ignores.
    fn start(platform: &MockPlatform, ports: Vec<u16>, every: Duration, run: Duration, pad: usize) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let client = client();
        let run = u64::try_from(run.as_millis()).unwrap_or(u64::MAX).max(1);
        let body_of = {
            let template = platform.webhook_body("", json!({"pad": "x".repeat(pad)}));
            move |id: &str, n: u64| {
                let mut body = template.clone();
                body["order_id"] = json!(id);
                body["inputs"]["sleep_ms"] = json!(n * 7 % run);
                body
            }
        };
        let task = {
            let (running, sent) = (Arc::clone(&running), Arc::clone(&sent));
            tokio::spawn(async move {
                let mut requests = JoinSet::new();
                let mut tick = tokio::time::interval(every);
                // Bounded: at most 100,000 orders, and a test stops it long before.
                for n in 0..100_000u64 {
                    tick.tick().await;
                    if !running.load(Ordering::Relaxed) {
                        break;
                    }
                    let order_id = format!("load-{n:06}");
                    let port = ports[n as usize % ports.len()];
                    let body = body_of(&order_id, n);
                    let (client, sent) = (client.clone(), Arc::clone(&sent));
                    requests.spawn(async move {
                        let status = send(&client, port, &body).await;
                        sent.lock().unwrap().push(Sent { order_id, status });
                    });
                    while requests.try_join_next().is_some() {}
                }
                // Each request ends within the client's timeout.
                while requests.join_next().await.is_some() {}
            })
        };
        Load { running, sent, task }
    }

    /// Answers so far with `status`.
    fn count(&self, status: Option<u16>) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.status == status)
            .count()
    }

    /// Stops sending, waits for the answers still due, and returns every webhook sent.
    async fn finish(self) -> Vec<Sent> {
        self.running.store(false, Ordering::Relaxed);
        tokio::time::timeout(WEBHOOK_TIMEOUT + Duration::from_secs(5), self.task)
            .await
            .expect("the load's last answers in time")
            .expect("load task");
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .expect("client")
}

/// POSTs a webhook body to the instance on `port`; its status, `None` without an answer.
async fn send(client: &reqwest::Client, port: u16, body: &serde_json::Value) -> Option<u16> {
    client
        .post(format!("http://127.0.0.1:{port}/shorts/work"))
        .header("content-type", "application/json")
        .header("x-api-key", MockPlatform::WEBHOOK_KEY)
        .body(body.to_string())
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Sends new orders to the instance on `port` until one is answered 200 (for at most `patience`);
/// the acknowledged order's id and how long it took.
async fn first_acked(
    platform: &MockPlatform,
    port: u16,
    name: &str,
    patience: Duration,
) -> Option<(String, Duration)> {
    let client = client();
    let started = Instant::now();
    for attempt in 0..1000 {
        if started.elapsed() > patience {
            break;
        }
        let order_id = format!("{name}-{attempt}");
        let body = platform.webhook_body(&order_id, json!({}));
        if send(&client, port, &body).await == Some(200) {
            return Some((order_id, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// What the platform got for the orders sent.
struct Figures {
    sent: usize,
    acked: usize,
    refused: BTreeMap<String, usize>,
    delivered: usize,
    lost: Vec<String>,
    unacked_delivered: usize,
    duplicates: usize,
    failed: Vec<String>,
    runs: BTreeMap<usize, usize>,
}

impl Figures {
    /// Waits (at most `patience`) until every acknowledged order has a callback, then counts.
    async fn gather(platform: &MockPlatform, sent: &[Sent], runs_file: &Path, patience: Duration) -> Self {
        let acked: HashSet<&str> = sent
            .iter()
            .filter(|s| s.status == Some(200))
            .map(|s| s.order_id.as_str())
            .collect();
        let deadline = Instant::now() + patience;
        loop {
            let delivered: HashSet<String> = platform
                .callbacks()
                .iter()
                .map(|c| c.order_id().to_owned())
                .collect();
            if acked.iter().all(|id| delivered.contains(*id)) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let callbacks = platform.callbacks();
        let by_order: HashMap<&str, Vec<&testing::Callback>> =
            callbacks.iter().fold(HashMap::new(), |mut map, c| {
                map.entry(c.order_id()).or_default().push(c);
                map
            });
        let mut refused = BTreeMap::new();
        for s in sent.iter().filter(|s| s.status != Some(200)) {
            let key = s
                .status
                .map_or("no answer".to_owned(), |status| status.to_string());
            *refused.entry(key).or_default() += 1;
        }
        let mut lost: Vec<String> = acked
            .iter()
            .filter(|id| !by_order.contains_key(**id))
            .map(|id| (*id).to_owned())
            .collect();
        lost.sort();
        let mut runs_per_order: HashMap<String, usize> = HashMap::new();
        for line in std::fs::read_to_string(runs_file).unwrap_or_default().lines() {
            *runs_per_order.entry(line.to_owned()).or_default() += 1;
        }
        let mut runs = BTreeMap::new();
        for count in runs_per_order.values() {
            *runs.entry(*count).or_default() += 1;
        }
        Figures {
            sent: sent.len(),
            acked: acked.len(),
            refused,
            delivered: acked.iter().filter(|id| by_order.contains_key(**id)).count(),
            lost,
            unacked_delivered: sent
                .iter()
                .filter(|s| s.status != Some(200) && by_order.contains_key(s.order_id.as_str()))
                .count(),
            duplicates: callbacks.iter().filter(|c| c.duplicate).count(),
            failed: callbacks
                .iter()
                .filter(|c| !c.ok())
                .map(|c| c.body.to_string())
                .collect(),
            runs,
        }
    }

    fn print(&self, name: &str) {
        let runs: Vec<String> = self
            .runs
            .iter()
            .map(|(runs, orders)| format!("{runs}x: {orders}"))
            .collect();
        println!(
            "outage ({name}): sent {}, acked {}, refused {:?}, delivered {}, lost {}, \
             delivered though not acked {}, duplicate callbacks {}, ok:false {}, handler runs per order [{}]",
            self.sent,
            self.acked,
            self.refused,
            self.delivered,
            self.lost.len(),
            self.unacked_delivered,
            self.duplicates,
            self.failed.len(),
            runs.join(", "),
        );
    }

    fn check(&self) {
        assert!(
            self.lost.is_empty(),
            "acknowledged orders never delivered: {:?}",
            &self.lost[..self.lost.len().min(20)]
        );
        assert!(
            self.failed.is_empty(),
            "orders failed although the short never fails: {:?}",
            &self.failed[..self.failed.len().min(5)]
        );
    }
}

/// The last lines of an instance's log, to read when a check fails.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn instance_env(platform: &MockPlatform, store: &str, runs_file: &Path) -> Vec<(String, String)> {
    let mut env = common_env(platform, store, runs_file);
    env.push(("RUST_LOG".to_owned(), "warn".to_owned()));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_keep_every_acknowledged_order_through_a_postgres_outage() {
    let dir = temp_dir("shorts-outage", "postgres");
    let runs_file = dir.join("runs.log");
    let cluster = Cluster::start();
    let platform = MockPlatform::start().await.expect("mock");
    let env = instance_env(&platform, &cluster.url(), &runs_file);
    let logs = [dir.join("a.log"), dir.join("b.log")];
    let mut instances: Vec<Instance> = logs
        .iter()
        .map(|log| Instance::logged(BIN, env.clone(), log))
        .collect();
    let ports: Vec<u16> = instances.iter().map(Instance::port).collect();
    let pids: Vec<u32> = instances.iter().map(|i| i.pid().expect("running")).collect();
    for instance in &instances {
        instance.wait_serving().await;
    }

    let load = Load::start(
        &platform,
        ports.clone(),
        Duration::from_millis(20),
        Duration::from_millis(200),
        0,
    );
    // Under load for a moment (bounded: 10 s) before the outage.
    for _ in 0..100 {
        if load.count(Some(200)) >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = Instant::now();
    cluster.stop();
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    cluster.resume();

    // Each instance takes new orders again, and delivers them.
    let patience = Duration::from_secs(20);
    let (a, b) = tokio::join!(
        first_acked(&platform, ports[0], "after-0", patience),
        first_acked(&platform, ports[1], "after-1", patience)
    );
    let mut recovered = Vec::new();
    for (i, acked) in [a, b].into_iter().enumerate() {
        let (order_id, took) = acked.unwrap_or_else(|| {
            panic!(
                "instance {i} took no order after the database came back:\n{}",
                tail(&logs[i])
            )
        });
        recovered.push((order_id, took));
    }
    let sent = load.finish().await;
    let mut ran_by: HashSet<u32> = HashSet::new();
    for (order_id, _) in &recovered {
        let callback = platform
            .wait_for(order_id, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{order_id}, taken after the outage, was not delivered"));
        assert!(callback.ok(), "{}", callback.body);
        let text = callback.body["result_text"].as_str().unwrap_or_default();
        ran_by.extend(
            pids.iter()
                .copied()
                .filter(|pid| text.ends_with(&format!("process {pid}"))),
        );
    }

    let figures = Figures::gather(&platform, &sent, &runs_file, Duration::from_secs(30)).await;
    figures.print("postgres stopped 10 s, 2 instances");
    println!(
        "outage (postgres): each instance took an order again {:?} after the database was back",
        recovered.iter().map(|(_, after)| after).collect::<Vec<_>>()
    );
    for (i, instance) in instances.iter_mut().enumerate() {
        assert_eq!(
            instance.exited(),
            None,
            "instance {i} exited:\n{}",
            tail(&logs[i])
        );
    }
    figures.check();
    assert_eq!(ran_by.len(), 2, "orders after the outage ran on both instances");
    let answered: HashSet<&str> = figures.refused.keys().map(String::as_str).collect();
    assert!(
        answered.is_subset(&HashSet::from(["503"])),
        "every refused webhook was answered 503: {:?}",
        figures.refused
    );
    drop(instances);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_on_a_full_disk_refuses_orders_and_recovers() {
    let disk = match Tmpfs::mount("16m") {
        Ok(disk) => disk,
        Err(reason) => {
            println!("skipped: the full-disk test needs a tmpfs of its own ({reason})");
            return;
        }
    };
    let dir = temp_dir("shorts-outage", "sqlite");
    let runs_file = dir.join("runs.log");
    let log = dir.join("server.log");
    let platform = MockPlatform::start().await.expect("mock");
    let store = format!("sqlite://{}", disk.dir.join("orders.db").display());
    let mut instance = Instance::logged(BIN, instance_env(&platform, &store, &runs_file), &log);
    let port = instance.port();
    instance.wait_serving().await;

    let load = Load::start(
        &platform,
        vec![port],
        Duration::from_millis(10),
        Duration::from_millis(500),
        4096,
    );
    for _ in 0..100 {
        if load.count(Some(200)) >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (filler, filled) = disk.fill();
    // Full for 3 s, and until the server has refused orders for a while (bounded: 15 s).
    let full = Instant::now();
    for _ in 0..150 {
        if load.count(Some(503)) >= 50 && full.elapsed() >= Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full_for = full.elapsed();
    std::fs::remove_file(&filler).expect("free the disk");
    let freed = Instant::now();
    let recovered = first_acked(&platform, port, "after", Duration::from_secs(20)).await;
    let sent = load.finish().await;
    let (order_id, _) =
        recovered.unwrap_or_else(|| panic!("no order taken once the disk had room again:\n{}", tail(&log)));
    let taken_after = freed.elapsed();
    let callback = platform
        .wait_for(&order_id, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("{order_id}, taken after the disk had room, was not delivered"));
    assert!(callback.ok(), "{}", callback.body);

    let figures = Figures::gather(&platform, &sent, &runs_file, Duration::from_secs(30)).await;
    figures.print("sqlite on a full disk");
    println!(
        "outage (sqlite): filled {} KiB, full for {:.1} s, an order taken {:.1} s after space came back",
        filled / 1024,
        full_for.as_secs_f64(),
        taken_after.as_secs_f64()
    );
    assert_eq!(instance.exited(), None, "the server exited:\n{}", tail(&log));
    figures.check();
    assert!(
        figures.refused.get("503").is_some_and(|&n| n > 0),
        "the full disk refused no order: {:?}",
        figures.refused
    );
    assert_eq!(
        figures.refused.keys().collect::<Vec<_>>(),
        ["503"],
        "every refused webhook was answered 503"
    );
    drop(instance);
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An order whose result the store refused, and then the release of its lease, runs again once
/// the store takes writes: the heartbeat renews every lease the instance holds, so a release
/// given up would leave the order leased, never run or delivered, while the process lives.
#[tokio::test]
async fn an_order_the_store_could_not_release_runs_again_once_it_can() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let dir = temp_dir("shorts-outage", "release");
    let db = dir.join("orders.db");
    let served = Served::start_with(
        {
            let db = db.clone();
            move |config| {
                config.store = StoreConfig::Sqlite(db);
                config.lease = Duration::from_secs(1);
            }
        },
        |builder| {
            builder
                .without_registered()
                .short(Short::new("count", |_: serde_json::Value, _: Order| async {
                    RUNS.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Error>("counted")
                }))
        },
    )
    .await;
    // While `refuse` has a row, the store refuses callback bodies and releases of leases.
    let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("a connection of the test's own");
    sqlx::raw_sql(
        "CREATE TABLE refuse (why TEXT); INSERT INTO refuse VALUES ('an outage');
         CREATE TRIGGER refuse_bodies BEFORE INSERT ON shorts_results WHEN EXISTS (SELECT 1 FROM refuse)
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
         CREATE TRIGGER refuse_releases BEFORE UPDATE OF owner ON shorts_orders
         WHEN NEW.owner IS NULL AND EXISTS (SELECT 1 FROM refuse)
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .execute(&mut c)
    .await
    .expect("triggers");

    assert_eq!(served.order("/shorts/count", "o-refused", json!({})).await, 200);
    for _ in 0..200 {
        if RUNS.load(Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(RUNS.load(Ordering::SeqCst), 1, "the short ran");
    // Time for the result and the release to be refused, and for the lease to have run out but
    // for the heartbeat.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let record = served
        .app
        .order("o-refused")
        .await
        .expect("order")
        .expect("stored");
    assert_eq!(record.state, OrderState::Received, "no result stored yet");
    sqlx::raw_sql("DELETE FROM refuse")
        .execute(&mut c)
        .await
        .expect("the store takes writes again");

    let callback = served
        .platform
        .wait_for("o-refused", PATIENCE)
        .await
        .expect("the order ran again and was delivered");
    assert_eq!(callback.body["result_text"], "counted");
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
    served.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
