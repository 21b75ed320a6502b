//! An open-loop load generator: requests leave at a constant rate whatever the answers, and each
//! latency is measured from the request's *intended* send time, so a slow server cannot hide its
//! queue (no coordinated omission).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// What a run measured.
pub(crate) struct Run {
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    /// Webhook latency in microseconds.
    pub(crate) latency: Histogram<u64>,
    /// When each acknowledged order was meant to be sent.
    pub(crate) intended: HashMap<String, Instant>,
    /// When the run's first request was meant to leave.
    pub(crate) start: Instant,
    /// Each request's intended send time (from `start`) and latency, for a timeline.
    pub(crate) samples: Vec<(Duration, Duration)>,
    /// Readings of the server's and the load generator's CPU during the run, when taken.
    pub(crate) samples_of_cpu: Vec<crate::proc::Sample>,
}

impl Run {
    pub(crate) fn p(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The largest latency (ms) among the requests meant to leave in each `step` of the run.
    pub(crate) fn timeline(&self, step: Duration) -> Vec<f64> {
        let mut worst = Vec::new();
        for (sent, latency) in &self.samples {
            let slot = (sent.as_secs_f64() / step.as_secs_f64()) as usize;
            if worst.len() <= slot {
                worst.resize(slot + 1, 0.0);
            }
            worst[slot] = f64::max(worst[slot], latency.as_secs_f64() * 1000.0);
        }
        worst
    }

    pub(crate) fn error_share(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.sent - self.ok) as f64 / self.sent as f64
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// Sends `rate` webhooks a second for `duration`, spread over `urls` round-robin (one URL, or
/// instances sharing one store), stopping early (sending no more) once `stop`, when given, is
/// cancelled; `body(order_id)` makes each body.
pub(crate) async fn open_loop(
    client: &reqwest::Client,
    urls: &[&str],
    prefix: &str,
    rate: f64,
    duration: Duration,
    stop: Option<&tokio_util::sync::CancellationToken>,
    body: impl Fn(&str) -> String,
) -> Run {
    assert!(!urls.is_empty(), "a URL to send to");
    let mut count = (rate * duration.as_secs_f64()).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let (results, mut received) = tokio::sync::mpsc::unbounded_channel();
    let urls: Vec<Arc<str>> = urls.iter().map(|url| Arc::from(*url)).collect();
    for i in 0..count {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(intended).await;
        if stop.is_some_and(tokio_util::sync::CancellationToken::is_cancelled) {
            count = i;
            break;
        }
        let order_id = format!("{prefix}-{i}");
        let url = &urls[(i % urls.len() as u64) as usize];
        let request = client
            .post(&**url)
            .header("content-type", "application/json")
            .header("x-api-key", shorts_runtime::testing::MockPlatform::WEBHOOK_KEY)
            .body(body(&order_id));
        let results = results.clone();
        tokio::spawn(async move {
            let ok = request.send().await.is_ok_and(|r| r.status().is_success());
            let _ = results.send((order_id, intended, ok, intended.elapsed()));
        });
    }
    drop(results);
    let mut run = Run {
        sent: count,
        ok: 0,
        latency: histogram(),
        intended: HashMap::with_capacity(count as usize),
        start,
        samples: Vec::with_capacity(count as usize),
        samples_of_cpu: Vec::new(),
    };
    while let Some((order_id, intended, ok, latency)) = received.recv().await {
        run.samples.push((intended - start, latency));
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = run.latency.record(micros.min(120_000_000));
        if ok {
            run.ok += 1;
            run.intended.insert(order_id, intended);
        }
    }
    run
}

/// One client for the load: many connections, no idle limit.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}
