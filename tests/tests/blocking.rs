//! `#[ai_short(blocking)]`: a plain `fn` run on the blocking thread pool, whose timeout, panics
//! and errors end the order as an `async` short's do.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use shorts_runtime::prelude::*;
use shorts_tests::Served;

#[derive(Deserialize)]
struct Input {
    text: String,
}

/// Released by the test once the timeout callback came; `sleeps` waits for it (60 s at most).
static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
/// Set when `sleeps` stops blocking.
static WOKE: AtomicBool = AtomicBool::new(false);

/// Blocks its thread until the test releases it: far past its timeout.
#[ai_short(blocking, timeout = "1s")]
fn sleeps(input: Input) -> Result<String> {
    let (released, wake) = &RELEASE;
    let guard = released.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let _guard = wake
        .wait_timeout_while(guard, Duration::from_secs(60), |released| !*released)
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    WOKE.store(true, Ordering::SeqCst);
    Ok(input.text)
}

#[ai_short(blocking)]
fn shouts(input: Input, order: Order) -> Result<String> {
    Ok(format!("{} for {}", input.text.to_uppercase(), order.id()))
}

#[ai_short(blocking)]
#[allow(clippy::panic)]
fn panics(input: Input) -> Result<String> {
    panic!("secret internal detail {}", input.text);
}

#[ai_short(blocking)]
fn fails(input: Input) -> Result<String> {
    let n: u32 = input.text.parse()?;
    Ok(n.to_string())
}

/// The order ends with its timeout callback at the deadline, not when the thread is done: on the
/// test's single-threaded runtime too, which a blocked `async` short would stop.
#[tokio::test]
async fn a_blocking_short_times_out_at_its_deadline() {
    let served = Served::start().await;
    let sent = Instant::now();
    assert_eq!(
        served
            .order("/shorts/sleeps", "o-sleep", json!({"text": "hi"}))
            .await,
        200
    );
    let body = served.callback("o-sleep").await;
    let took = sent.elapsed();
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(
        body["error"], "the short did not finish within its timeout of 1s",
        "{body}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "the callback came after {took:?}, before the timeout"
    );
    // The thread still blocks: the callback came at the deadline, not when the thread was done.
    assert!(
        !WOKE.load(Ordering::SeqCst),
        "the callback came after the short's thread stopped blocking ({took:?})"
    );
    assert!(
        took < Duration::from_secs(30),
        "the callback came after {took:?}, not at the 1 s timeout"
    );
    let (released, wake) = &RELEASE;
    *released.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    wake.notify_all();
    served.stop().await;
}

#[tokio::test]
async fn a_blocking_short_gets_its_input_and_order() {
    let served = Served::start().await;
    assert_eq!(
        served
            .order("/shorts/shouts", "o-shout", json!({"text": "hi"}))
            .await,
        200
    );
    let body = served.callback("o-shout").await;
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["result_text"], "HI for o-shout", "{body}");
    served.stop().await;
}

#[tokio::test]
async fn a_blocking_panic_ends_the_order_as_an_async_one_does() {
    let served = Served::start().await;
    assert_eq!(
        served
            .order("/shorts/panics", "o-panic", json!({"text": "boom"}))
            .await,
        200
    );
    let body = served.callback("o-panic").await;
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(
        body["error"], "the short failed unexpectedly (it panicked)",
        "{body}"
    );
    served.stop().await;
}

#[tokio::test]
async fn a_blocking_error_sends_its_message() {
    let served = Served::start().await;
    assert_eq!(
        served
            .order("/shorts/fails", "o-fail", json!({"text": "ten"}))
            .await,
        200
    );
    let body = served.callback("o-fail").await;
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["error"], "invalid digit found in string", "{body}");
    served.stop().await;
}
