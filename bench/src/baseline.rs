//! Hand-written baselines, run as child processes of the bench.

use std::process::ExitCode;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio_util::io::ReaderStream;

use crate::proc;

/// `__bare-put URL FILE MIME`: one streamed PUT of FILE with an explicit `Content-Length`, as a
/// careful engineer would write it with reqwest. Prints nothing; the mock measures the transfer.
pub(crate) fn bare_put(args: &[String]) -> ExitCode {
    let [url, path, mime] = args else {
        return ExitCode::from(2);
    };
    crate::runtime().block_on(async {
        let file = tokio::fs::File::open(path).await.expect("open");
        let size = file.metadata().await.expect("metadata").len();
        let response = reqwest::Client::new()
            .put(url)
            .header("content-type", mime)
            .header("content-length", size)
            .body(reqwest::Body::wrap_stream(ReaderStream::with_capacity(
                file,
                64 * 1024,
            )))
            .send()
            .await
            .expect("put");
        if response.status().is_success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}

/// `__bare-inline URL SECRET FILE N ORDER_PREFIX`: N callbacks carrying FILE inline: read it,
/// base64-encode it into the JSON body, POST it. Prints its own user and system CPU seconds,
/// minor page faults and elapsed seconds.
pub(crate) fn bare_inline(args: &[String]) -> ExitCode {
    let [url, secret, path, n, prefix] = args else {
        return ExitCode::from(2);
    };
    let n: u32 = n.parse().expect("count");
    let pid = std::process::id();
    let before = proc::Usage::of(pid).unwrap_or_default();
    let started = Instant::now();
    crate::runtime().block_on(async {
        let client = reqwest::Client::new();
        for i in 0..n {
            let data = tokio::fs::read(path).await.expect("read");
            let body = serde_json::json!({
                "ok": true,
                "order_id": format!("{prefix}-{i}"),
                "output_type": "file",
                "filename": "inline.bin",
                "mime_type": "application/octet-stream",
                "file_base64": STANDARD.encode(&data),
            })
            .to_string();
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-callback-secret", secret)
                .body(body)
                .send()
                .await
                .expect("post");
            assert!(response.status().is_success(), "{}", response.status());
        }
    });
    let used = proc::Usage::of(pid).unwrap_or_default().per(&before, 1);
    println!(
        "{} {} {} {}",
        used.user,
        used.system,
        used.faults,
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
