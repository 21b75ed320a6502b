//! Large files: memory and throughput of a direct upload, CPU of an inline file.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use shorts_runtime::testing::MockPlatform;

use crate::proc::{self, Usage};
use crate::{Server, machine};

const MB: f64 = 1_000_000.0;
const MIB: f64 = 1024.0 * 1024.0;

struct Sizes {
    upload: u64,
    inline: u64,
    inline_orders: u32,
    rounds: usize,
}

pub(crate) async fn run(quick: bool) -> ExitCode {
    let sizes = if quick {
        Sizes {
            upload: 20_000_000,
            inline: 3_300_000,
            inline_orders: 5,
            rounds: 1,
        }
    } else {
        Sizes {
            upload: 150 * 1024 * 1024,
            inline: 3_300_000,
            inline_orders: 100,
            rounds: 3,
        }
    };
    let dir = std::env::temp_dir().join(format!("shorts-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = RemoveDir(dir.clone());
    let big = write_file(&dir, "big.bin", sizes.upload);
    let inline = write_file(&dir, "inline.bin", sizes.inline);
    let tiny = write_file(&dir, "tiny.bin", 1000);

    println!("machine: {}", machine());
    println!(
        "files: upload {:.1} MiB, inline {:.1} MB x {} orders{}",
        sizes.upload as f64 / MIB,
        sizes.inline as f64 / MB,
        sizes.inline_orders,
        if quick { " (quick)" } else { "" }
    );

    let platform = MockPlatform::start().await.expect("mock");
    // Force the tiny warm-up file through direct upload too, so that idle RSS is measured after
    // every code path of the upload has run once.
    let server = Server::start(&platform, &[("SHORTS_INLINE_LIMIT", "100")]).await;
    order(&platform, &server, "warm-up", &tiny).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = proc::memory(server.pid(), "VmRSS").expect("rss");

    let mut framework = Vec::new();
    let mut bare = Vec::new();
    let mut peak_growth = 0u64;
    for round in 0..sizes.rounds {
        let (peak, elapsed) = upload(&platform, &server, &format!("upload-{round}"), &big).await;
        peak_growth = peak_growth.max(peak.saturating_sub(idle));
        framework.push(sizes.upload as f64 / elapsed.as_secs_f64());
        bare.push(sizes.upload as f64 / bare_put(&platform, &big, sizes.upload).await.as_secs_f64());
    }
    drop(server);
    let framework = median(&mut framework);
    let bare = median(&mut bare);

    let server = Server::start(&platform, &[]).await;
    order(&platform, &server, "inline-warm-up", &tiny).await;
    let (framework_cpu, bare_cpu) =
        inline_cpu(&platform, &server, &inline, sizes.inline_orders, "sqlite").await;
    drop(server);
    // The same without durability, to show what storing the 4.4 MB callback body costs.
    let server = Server::start(&platform, &[("SHORTS_STORE", "memory")]).await;
    order(&platform, &server, "inline-warm-up-memory", &tiny).await;
    let (memory_cpu, _) = inline_cpu(&platform, &server, &inline, sizes.inline_orders, "memory").await;
    drop(server);
    // PostgreSQL keeps the body in the database, where every instance reads it.
    let postgres = match crate::PgSchema::create() {
        Ok(schema) => {
            let server = Server::start(&platform, &[("SHORTS_STORE", &schema.url)]).await;
            order(&platform, &server, "inline-warm-up-postgres", &tiny).await;
            let database_before = Usage::of_all("postgres");
            let (cpu, _) = inline_cpu(&platform, &server, &inline, sizes.inline_orders, "postgres").await;
            // The database's processes, over the orders and the baseline's run after them (which
            // does not touch the database).
            let database = Usage::of_all("postgres").per(&database_before, sizes.inline_orders);
            Ok((cpu, cpu.plus(&database)))
        }
        Err(why) => Err(why),
    };

    println!();
    println!("| figure | shorts | baseline | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| RSS growth delivering the upload file (peak - idle; idle {:.1} MiB) | {:.1} MiB | | | <= 16 MiB |",
        idle as f64 / MIB,
        peak_growth as f64 / MIB
    );
    println!(
        "| upload throughput (median of {}) | {:.0} MB/s | {:.0} MB/s (bare reqwest streamed PUT) | {:.2}x | >= 0.9x |",
        sizes.rounds,
        framework / MB,
        bare / MB,
        framework / bare
    );
    println!(
        "| CPU per inline {:.1} MB file callback (SQLite store: the 4.4 MB body is committed before the POST) | {} | {} (base64 + one POST) | {:.2}x | <= 1.1x |",
        sizes.inline as f64 / MB,
        shown(&framework_cpu),
        shown(&bare_cpu),
        framework_cpu.cpu() / bare_cpu.cpu()
    );
    println!(
        "| CPU per inline {:.1} MB file callback (memory store: not durable) | {} | {} | {:.2}x | |",
        sizes.inline as f64 / MB,
        shown(&memory_cpu),
        shown(&bare_cpu),
        memory_cpu.cpu() / bare_cpu.cpu()
    );
    let row = "CPU per inline file callback (PostgreSQL store: the server, then the server and PostgreSQL's processes)";
    match postgres {
        Ok((server, with_database)) => println!(
            "| {row} | {}; {} | {} | {:.2}x; {:.2}x | |",
            shown(&server),
            shown(&with_database),
            shown(&bare_cpu),
            server.cpu() / bare_cpu.cpu(),
            with_database.cpu() / bare_cpu.cpu()
        ),
        Err(why) => println!("| {row} | not measured: {why} | | | |"),
    }
    ExitCode::SUCCESS
}

/// CPU per callback, split into user and system time, with the pages mapped for the first time.
fn shown(usage: &Usage) -> String {
    format!(
        "{:.1} ms (user {:.1}, system {:.1}; {} page faults)",
        usage.cpu() * 1000.0,
        usage.user * 1000.0,
        usage.system * 1000.0,
        usage.faults
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn write_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut data = Vec::with_capacity(size as usize);
    while (data.len() as u64) < size {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        data.extend_from_slice(&rng.to_le_bytes());
    }
    data.truncate(size as usize);
    std::fs::write(&path, data).expect("write");
    path
}

/// Sends one `blob` order and waits for its callback.
async fn order(platform: &MockPlatform, server: &Server, order_id: &str, path: &Path) {
    let body = platform.webhook_body(order_id, json!({"path": path}));
    let status = platform
        .send_webhook(&server.url("/shorts/blob"), &body)
        .await
        .expect("webhook");
    assert_eq!(status, 200);
    let callback = platform
        .wait_for(order_id, Duration::from_secs(600))
        .await
        .expect("callback");
    assert!(callback.ok(), "{}", callback.body);
}

/// Delivers `path` by direct upload; returns the server's peak RSS meanwhile and the transfer time
/// measured at the storage.
async fn upload(platform: &MockPlatform, server: &Server, order_id: &str, path: &Path) -> (u64, Duration) {
    let pid = server.pid();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = proc::memory(pid, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    order(platform, server, order_id, path).await;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let object = platform
        .objects()
        .into_iter()
        .find(|o| o.object_key.starts_with(&format!("orders/{order_id}/")))
        .expect("uploaded object");
    (peak.load(Ordering::Relaxed), object.elapsed)
}

/// The same file PUT by the hand-written baseline, as a child process; the transfer time as the
/// storage measured it.
async fn bare_put(platform: &MockPlatform, path: &Path, size: u64) -> Duration {
    let prepared = reqwest::Client::new()
        .post(format!("{}/prepare", platform.callback_url()))
        .header("content-type", "application/json")
        .header("x-callback-secret", platform.secret())
        .body(
            json!({"order_id": "bare", "filename": "big.bin", "mime_type": "application/octet-stream", "file_size": size})
                .to_string(),
        )
        .send()
        .await
        .expect("prepare")
        .text()
        .await
        .expect("prepare answer");
    let prepared: serde_json::Value = serde_json::from_str(&prepared).expect("prepare json");
    let url = prepared["upload_url"].as_str().expect("upload_url").to_owned();
    let key = prepared["object_key"].as_str().expect("object_key").to_owned();
    let exe = std::env::current_exe().expect("own path");
    let path = path.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .args(["__bare-put", &url])
            .arg(&path)
            .arg("application/octet-stream")
            .status()
            .expect("baseline runs")
    })
    .await
    .expect("join");
    assert!(status.success());
    platform
        .objects()
        .into_iter()
        .find(|o| o.object_key == key)
        .expect("bare object")
        .elapsed
}

/// CPU and page faults per inline callback: the framework's server process for `n` orders, and
/// the hand-written baseline for `n` callbacks of the same file.
async fn inline_cpu(
    platform: &MockPlatform,
    server: &Server,
    path: &Path,
    n: u32,
    tag: &str,
) -> (Usage, Usage) {
    let pid = server.pid();
    let before = Usage::of(pid).expect("cpu");
    for i in 0..n {
        order(platform, server, &format!("inline-{tag}-{i}"), path).await;
    }
    let framework = Usage::of(pid).expect("cpu").per(&before, n);
    let last = platform.callbacks().last().map(|c| c.size).unwrap_or(0);
    assert!(last > 4_000_000, "the inline file went inline ({last} bytes)");

    let exe = std::env::current_exe().expect("own path");
    let args = [
        "__bare-inline".to_owned(),
        platform.callback_url(),
        platform.secret().to_owned(),
        path.display().to_string(),
        n.to_string(),
        format!("bare-inline-{tag}"),
    ];
    let output =
        tokio::task::spawn_blocking(move || Command::new(exe).args(args).output().expect("baseline runs"))
            .await
            .expect("join");
    let text = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<f64> = text.split_whitespace().filter_map(|s| s.parse().ok()).collect();
    let [user, system, faults, _elapsed] = figures[..] else {
        panic!("the baseline printed {text:?}");
    };
    let n = f64::from(n);
    let bare = Usage {
        user: user / n,
        system: system / n,
        faults: (faults / n) as u64,
    };
    (framework, bare)
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
