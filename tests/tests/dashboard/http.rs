//! The orders dashboard over HTTP on 127.0.0.1: an operator logs in, finds a dead order and
//! retries it until the mock platform has it, fails a stuck order and sees its `ok: false`
//! callback; requests without the token or the CSRF token are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use shorts_runtime::prelude::*;
use shorts_runtime::{App, OrderState};
use shorts_tests::{Served, until};

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short]
async fn echo(input: Input) -> Result<String> {
    Ok(input.text)
}

/// Lets its runs end one per permit; only the test that sends it orders adds permits.
static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
static GATED_STARTED: AtomicUsize = AtomicUsize::new(0);

#[ai_short(concurrency = 1)]
async fn gated(_input: serde_json::Value) -> Result<String> {
    GATED_STARTED.fetch_add(1, Ordering::SeqCst);
    let _pass = GATE.acquire().await;
    Ok("finished".to_owned())
}

const TOKEN: &str = "a-dashboard-token-0123456789";

/// The App's admin routes, served on a port of their own; stopped when the test ends.
async fn serve_admin(app: &App) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.admin_router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A browser without cookies of its own that does not follow redirects: the test sends the
/// session cookie itself.
struct Operator {
    client: reqwest::Client,
    admin: SocketAddr,
    cookie: String,
}

impl Operator {
    /// Logs in through the form with the admin token.
    async fn login(admin: SocketAddr) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let login = client
            .post(format!("http://{admin}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 303);
        let cookie = login.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        Self {
            client,
            admin,
            cookie,
        }
    }

    /// The page at `path`: its status and HTML.
    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("http://{}{path}", self.admin))
            .header("accept", "text/html")
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The page at `path`, which must answer 200.
    async fn page(&self, path: &str) -> String {
        let (status, html) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {html}");
        html
    }

    /// POSTs the form `fields` to `path`: the status and the `Location` answered.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, Option<String>) {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .client
            .post(format!("http://{}{path}", self.admin))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        (response.status().as_u16(), location)
    }
}

/// `value` percent-encoded for a form body.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the hidden CSRF field of a page.
fn csrf(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF field in {html}"))
        .to_owned()
}

/// The `order_id`s of the rows of the orders table.
fn rows(html: &str) -> Vec<&str> {
    html.split("<tr data-order=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// The `data-state` of an order's page.
fn state(html: &str) -> &str {
    html.split("<span id=\"state\" data-state=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no state in {html}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_order_found_by_filtering_is_retried_until_the_platform_has_it() {
    let served = Served::start_with(
        |config| config.admin_token = Some(shorts_runtime::Secret::new(TOKEN)),
        |b| b,
    )
    .await;
    let admin = serve_admin(&served.app).await;
    // The platform refuses the first callback for good: the order is dead.
    served.platform.fail_next(1, 400);
    assert_eq!(
        served
            .order("/shorts/echo", "o-dead", json!({"text": "hi"}))
            .await,
        200
    );
    served.reached("o-dead", OrderState::Dead).await;
    assert_eq!(
        served
            .order("/shorts/echo", "o-fine", json!({"text": "yo"}))
            .await,
        200
    );
    served.delivered("o-fine").await;

    // Without the token or a session, no page answers.
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "/",
        "/orders",
        "/orders/o-dead",
        "/orders/o-dead/retry",
        "/orders/o-dead/fail",
    ] {
        let response = anonymous
            .get(format!("http://{admin}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let forged = anonymous
        .post(format!("http://{admin}/orders/o-dead/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let operator = Operator::login(admin).await;
    let overview = operator.page("/").await;
    assert!(
        overview.contains(
            "<li data-state=\"dead\"><a href=\"/orders?state=dead\"><span class=\"count\">1</span>"
        ),
        "{overview}"
    );
    let dead = operator.page("/orders?state=dead&short=any&q=").await;
    assert_eq!(rows(&dead), ["o-dead"]);
    let detail = operator.page("/orders/o-dead").await;
    assert_eq!(state(&detail), "dead");
    assert!(
        detail.contains("id=\"retry\" href=\"/orders/o-dead/retry\""),
        "{detail}"
    );
    assert!(
        detail.contains("(HTTP 400)"),
        "the refusal is on the timeline: {detail}"
    );
    let confirm = operator.page("/orders/o-dead/retry").await;
    let token = csrf(&confirm);

    // Without the CSRF token nothing happens.
    let (status, _) = operator.post("/orders/o-dead/retry", &[]).await;
    assert_eq!(status, 403);
    let (status, _) = operator
        .post("/orders/o-dead/retry", &[("csrf", "not-the-token")])
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        served.app.order("o-dead").await.unwrap().unwrap().state,
        OrderState::Dead
    );

    let (status, location) = operator.post("/orders/o-dead/retry", &[("csrf", &token)]).await;
    assert_eq!(status, 303);
    assert_eq!(location.as_deref(), Some("/orders/o-dead?done=retried"));
    let callback = served.callback("o-dead").await;
    assert_eq!(callback["ok"], true);
    assert_eq!(callback["result_text"], "hi");
    served.delivered("o-dead").await;
    let after = operator.page("/orders/o-dead?done=retried").await;
    assert_eq!(state(&after), "delivered");
    assert!(after.contains("data-done=\"retried\""), "{after}");
    assert!(
        !after.contains("id=\"retry\""),
        "a delivered order is not retried"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_order_is_failed_with_the_typed_message() {
    let served = Served::start_with(
        |config| config.admin_token = Some(shorts_runtime::Secret::new(TOKEN)),
        |b| b,
    )
    .await;
    let admin = serve_admin(&served.app).await;
    // The first order holds the short's only slot; the second waits for it: stuck.
    assert_eq!(served.order("/shorts/gated", "o-busy", json!({})).await, 200);
    until("the first order runs", || {
        GATED_STARTED.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(served.order("/shorts/gated", "o-stuck", json!({})).await, 200);

    let operator = Operator::login(admin).await;
    let received = operator.page("/orders?state=received&short=gated").await;
    assert_eq!(rows(&received), ["o-stuck", "o-busy"]);
    // The one running says so; the one waiting for a slot does not.
    let running: Vec<&str> = received
        .split("<tr data-order=\"")
        .skip(1)
        .filter(|row| {
            row.split('>')
                .next()
                .is_some_and(|tag| tag.contains("data-running"))
        })
        .filter_map(|row| row.split('"').next())
        .collect();
    assert_eq!(running, ["o-busy"], "{received}");
    let detail = operator.page("/orders/o-stuck").await;
    assert_eq!(state(&detail), "received");
    assert!(
        detail.contains("id=\"fail\" href=\"/orders/o-stuck/fail\""),
        "{detail}"
    );
    let form = operator.page("/orders/o-stuck/fail").await;
    assert!(
        form.contains("<textarea id=\"message\" name=\"message\" required"),
        "{form}"
    );
    let token = csrf(&form);

    let message = "refunded: the source site is down <for now>";
    let (status, _) = operator
        .post("/orders/o-stuck/fail", &[("message", message)])
        .await;
    assert_eq!(status, 403, "no CSRF token");
    // The order running is left alone, and the page says why.
    let (status, location) = operator
        .post("/orders/o-busy/fail", &[("csrf", &token), ("message", message)])
        .await;
    assert_eq!(status, 303);
    assert_eq!(location.as_deref(), Some("/orders/o-busy?done=busy"));
    let busy = operator.page("/orders/o-busy?done=busy").await;
    assert!(busy.contains("data-done=\"busy\""), "{busy}");

    let (status, location) = operator
        .post("/orders/o-stuck/fail", &[("csrf", &token), ("message", message)])
        .await;
    assert_eq!(status, 303);
    assert_eq!(location.as_deref(), Some("/orders/o-stuck?done=failed"));
    let callback = served.callback("o-stuck").await;
    assert_eq!(
        (&callback["ok"], &callback["error"]),
        (&json!(false), &json!(message))
    );
    served.delivered("o-stuck").await;
    let after = operator.page("/orders/o-stuck?done=failed").await;
    assert_eq!(state(&after), "delivered");
    assert!(after.contains("data-done=\"failed\""), "{after}");
    assert!(
        after.contains("refunded: the source site is down &lt;for now&gt;"),
        "the message is on the timeline: {after}"
    );

    GATE.add_permits(1);
    assert_eq!(served.callback("o-busy").await["result_text"], "finished");
    served.delivered("o-busy").await;
    assert_eq!(
        GATED_STARTED.load(Ordering::SeqCst),
        1,
        "the failed order never ran"
    );
    served.stop().await;
}
