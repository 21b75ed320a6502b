//! The orders dashboard in a real browser: headless Chromium, driven through chromedriver, against
//! an App whose admin listener asks for a token and whose orders go to the mock platform. The
//! same pages and actions over plain HTTP are in [`http`].
//!
//! Each page the browser visits is saved as a PNG under `$CARGO_TARGET_TMPDIR/dashboard/<test>/`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

mod browser;
mod http;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use browser::Browser;
use serde_json::{Value, json};
use shorts_runtime::prelude::*;
use shorts_runtime::{App, OrderState, Secret};
use shorts_tests::{Served, until};
use tokio::sync::Semaphore;

/// The admin token the tests log in with.
const TOKEN: &str = "a-dashboard-token-0123456789";

/// The longest one test may take, browser start included.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Where a test's screenshots go: `$CARGO_TARGET_TMPDIR/dashboard/<test>`.
fn shots(test: &str) -> PathBuf {
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("dashboard")
        .join(test);
    println!("screenshots: {}", folder.display());
    folder
}

/// The App's admin routes on a port of their own of 127.0.0.1; served until the test ends.
async fn serve_admin(app: &App) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the admin listener");
    let addr = listener.local_addr().expect("its address");
    let router = app.admin_router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Logs in through the form with `token`; the path of the page the form leads to.
async fn log_in(browser: &Browser, admin: SocketAddr, token: &str) -> String {
    browser.goto(&format!("http://{admin}/login")).await;
    let field = browser.find("input[name=token]").await;
    field.send_keys(token).await.expect("the token typed");
    browser
        .click_to_page("form[action='/login'] button[type=submit]")
        .await;
    browser.path().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_the_token_and_the_login_form_lets_in() {
    let within = tokio::time::timeout(TEST_LIMIT, async {
        let echo = Short::new("echo", |input: Value, _: Order| async move {
            Ok::<_, Error>(input.to_string())
        });
        let served = Served::start_with(
            |config| config.admin_token = Some(Secret::new(TOKEN)),
            |builder| builder.without_registered().short(echo),
        )
        .await;
        let admin = serve_admin(&served.app).await;
        let url = |path: &str| format!("http://{admin}{path}");

        // Without the token a client is refused, and a browser sent to the login form.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        for path in ["/", "/orders", "/orders/o-1", "/orders/o-1/retry", "/metrics"] {
            let api = client.get(url(path)).send().await.expect("GET");
            assert_eq!(api.status(), 401, "GET {path} without the token");
            let page = client
                .get(url(path))
                .header("accept", "text/html")
                .send()
                .await
                .expect("GET");
            assert_eq!(page.status(), 303, "GET {path} from a browser without the token");
            assert_eq!(page.headers()["location"], "/login");
        }

        let mut browser = Browser::open(&shots("login")).await;
        browser.goto(&url("/orders")).await;
        assert_eq!(browser.path().await, "/login", "sent to the login form");
        let field = browser.find("input[name=token]").await;
        assert_eq!(
            field.attr("type").await.expect("type").as_deref(),
            Some("password")
        );
        browser.screenshot("login-form").await;

        // A wrong token is refused on the form, and sets no cookie.
        let path = log_in(&browser, admin, "not-the-token-0123456789").await;
        assert_eq!(path, "/login");
        assert!(
            browser.client().get_named_cookie("shorts_admin").await.is_err(),
            "no session after a wrong token"
        );
        browser.screenshot("login-refused").await;

        // The token opens a session (an HttpOnly cookie) and leads to the overview.
        assert_eq!(log_in(&browser, admin, TOKEN).await, "/");
        let cookie = browser
            .client()
            .get_named_cookie("shorts_admin")
            .await
            .expect("the session cookie");
        assert_eq!(cookie.http_only(), Some(true));
        browser.find("form[action='/logout']").await;
        browser.screenshot("overview").await;

        // Logging out ends the session: the next page is the login form again.
        browser
            .click_to_page("form[action='/logout'] button[type=submit]")
            .await;
        browser.goto(&url("/orders")).await;
        assert_eq!(browser.path().await, "/login");

        browser.close().await;
        served.stop().await;
    })
    .await;
    within.unwrap_or_else(|_| panic!("the test took more than {TEST_LIMIT:?}"));
}

/// The message the operator types when failing the stuck order.
const MESSAGE: &str = "Refunded: the source site is down today";

/// The order id and state (`data-order`, `data-state`) of each row of the orders table, top to
/// bottom.
async fn rows(browser: &Browser) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for row in browser.find_all("#orders tr[data-order]").await {
        let order = row.attr("data-order").await.expect("data-order");
        let state = row.attr("data-state").await.expect("data-state");
        rows.push((order.unwrap_or_default(), state.unwrap_or_default()));
    }
    rows
}

/// Applies the orders filter: `state` chosen in its select (when given), `q` typed in the search.
async fn filter(browser: &Browser, admin: SocketAddr, state: Option<&str>, q: &str) {
    browser.goto(&format!("http://{admin}/orders")).await;
    if let Some(state) = state {
        browser
            .find("#filter select[name=state]")
            .await
            .select_by_value(state)
            .await
            .expect("the state chosen");
    }
    let search = browser.find("#filter input[name=q]").await;
    search.clear().await.expect("the search cleared");
    search.send_keys(q).await.expect("the search typed");
    browser.click_to_page("#apply").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_order_is_retried_and_a_stuck_one_failed_from_the_dashboard() {
    let within = tokio::time::timeout(TEST_LIMIT, async {
        let echo = Short::new("echo", |input: Value, _: Order| async move {
            Ok::<_, Error>(format!("echo {input}"))
        });
        // One order of `slow` at a time, each running until the gate opens: the second waits.
        let gate = Arc::new(Semaphore::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let slow = Short::builder("slow", {
            let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
            move |_: Value, _: Order| {
                let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _pass = gate.acquire().await;
                    Ok::<_, Error>("finished")
                }
            }
        })
        .concurrency(1)
        .build();
        let served = Served::start_with(
            |config| config.admin_token = Some(Secret::new(TOKEN)),
            |builder| builder.without_registered().short(echo).short(slow),
        )
        .await;
        let admin = serve_admin(&served.app).await;
        let url = |path: &str| format!("http://{admin}{path}");

        // Two delivered orders; one dead, its callback refused (400); one running, and one stuck
        // waiting for it.
        for id in ["o-first", "o-second"] {
            assert_eq!(served.order("/shorts/echo", id, json!({"n": 1})).await, 200);
            served.delivered(id).await;
        }
        served.platform.fail_next(1, 400);
        assert_eq!(served.order("/shorts/echo", "o-dead", json!({"n": 2})).await, 200);
        served.reached("o-dead", OrderState::Dead).await;
        assert_eq!(served.order("/shorts/slow", "o-running", json!({})).await, 200);
        until("o-running to start", || started.load(Ordering::SeqCst) == 1).await;
        assert_eq!(served.order("/shorts/slow", "o-stuck", json!({})).await, 200);
        served.reached("o-stuck", OrderState::Received).await;
        let callback_of = |id: &str| {
            served
                .platform
                .callbacks()
                .into_iter()
                .find(|callback| callback.order_id() == id)
        };
        assert!(callback_of("o-dead").is_none());

        // Without the token, the retry is refused and changes nothing.
        let forged = reqwest::Client::new()
            .post(url("/orders/o-dead/retry"))
            .send()
            .await
            .expect("POST");
        assert_eq!(forged.status(), 401);
        assert_eq!(
            served.app.order("o-dead").await.expect("store").map(|r| r.state),
            Some(OrderState::Dead)
        );

        let mut browser = Browser::open(&shots("orders")).await;
        assert_eq!(log_in(&browser, admin, TOKEN).await, "/");
        browser.screenshot("overview").await;
        browser.goto(&url("/orders")).await;
        let mut all = rows(&browser).await;
        all.sort();
        let expected = [
            ("o-dead", "dead"),
            ("o-first", "delivered"),
            ("o-running", "received"),
            ("o-second", "delivered"),
            ("o-stuck", "received"),
        ]
        .map(|(id, state)| (id.to_owned(), state.to_owned()));
        assert_eq!(all, expected);
        browser.screenshot("orders").await;

        // The dead order, found by filtering, retried: delivered at the platform and on its page.
        filter(&browser, admin, Some("dead"), "").await;
        assert_eq!(rows(&browser).await, [("o-dead".to_owned(), "dead".to_owned())]);
        browser.screenshot("orders-dead").await;
        browser
            .click_to_page("#orders tr[data-order='o-dead'] a[href='/orders/o-dead']")
            .await;
        assert_eq!(browser.path().await, "/orders/o-dead");
        browser.find("#state[data-state=dead]").await;
        browser.find("#timeline").await;
        browser.screenshot("order-dead").await;
        browser.click_to_page("#retry").await;
        browser.find("#confirm").await;
        browser.screenshot("order-dead-retry").await;
        assert!(
            callback_of("o-dead").is_none(),
            "nothing happens before the confirmation"
        );
        browser.click_to_page("#confirm").await;
        let callback = served.callback("o-dead").await;
        assert_eq!(
            (&callback["ok"], &callback["result_text"]),
            (&json!(true), &json!(r#"echo {"n":2}"#))
        );
        assert_eq!(browser.path().await, "/orders/o-dead");
        browser.reload_until("#state[data-state=delivered]").await;
        browser.screenshot("order-dead-retried").await;

        // The stuck order, found by its id, failed with a message: an `ok: false` callback.
        filter(&browser, admin, None, "o-stuck").await;
        assert_eq!(
            rows(&browser).await,
            [("o-stuck".to_owned(), "received".to_owned())]
        );
        browser.screenshot("orders-search").await;
        browser
            .click_to_page("#orders tr[data-order='o-stuck'] a[href='/orders/o-stuck']")
            .await;
        browser.find("#state[data-state=received]").await;
        browser.screenshot("order-stuck").await;
        browser.click_to_page("#fail").await;
        let message = browser.find("textarea[name=message]").await;
        message.send_keys(MESSAGE).await.expect("the message typed");
        browser.screenshot("order-stuck-fail").await;
        assert!(
            callback_of("o-stuck").is_none(),
            "nothing happens before the confirmation"
        );
        browser.click_to_page("#confirm").await;
        let callback = served.callback("o-stuck").await;
        assert_eq!(
            (&callback["ok"], &callback["error"]),
            (&json!(false), &json!(MESSAGE))
        );
        assert_eq!(browser.path().await, "/orders/o-stuck");
        browser.reload_until("#state[data-state=delivered]").await;
        let page = browser.find("body").await.text().await.expect("the page's text");
        assert!(page.contains(MESSAGE), "the page shows the message:\n{page}");
        browser.screenshot("order-stuck-failed").await;

        // The running order was left alone; it ends once the gate opens.
        gate.add_permits(1);
        assert_eq!(served.callback("o-running").await["result_text"], "finished");
        assert_eq!(started.load(Ordering::SeqCst), 1, "the failed order never ran");

        browser.close().await;
        served.stop().await;
    })
    .await;
    within.unwrap_or_else(|_| panic!("the test took more than {TEST_LIMIT:?}"));
}
