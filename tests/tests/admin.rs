//! The admin listener: `/metrics` after a scripted set of orders, and its access rules.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use shorts_runtime::prelude::*;
use shorts_runtime::{App, OrderState};
use shorts_tests::{PATIENCE, Served, WEBHOOK_HEADERS};

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short]
async fn echo(input: Input) -> Result<String> {
    Ok(input.text)
}

#[ai_short]
async fn fails(_input: serde_json::Value) -> Result<String> {
    Err(Error::msg("no luck"))
}

#[ai_short]
async fn panics(_input: serde_json::Value) -> Result<String> {
    panic!("on purpose")
}

#[ai_short(timeout = "200ms")]
async fn slow(_input: serde_json::Value) -> Result<String> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok("late".to_owned())
}

#[ai_short]
async fn file(_input: serde_json::Value) -> Result<File> {
    Ok(File::from_bytes(
        "data.bin",
        "application/octet-stream",
        vec![7u8; 5000],
    ))
}

const TOKEN: &str = "an-admin-token-0123456789";

/// The App's admin routes, served on a port of their own; stopped when the test ends.
async fn serve_admin(app: &App) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.admin_router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A client that neither follows redirects nor keeps cookies: each test sends what it means to.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The samples of an exposition: `name{labels}` to value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            (
                name.to_owned(),
                value.parse().unwrap_or_else(|_| panic!("{line}")),
            )
        })
        .collect()
}

async fn scrape(addr: SocketAddr, token: Option<&str>) -> HashMap<String, f64> {
    let mut request = client().get(format!("http://{addr}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    samples(&text)
}

/// Sends an order and waits until the store has it in `state`.
async fn settled(served: &Served, short: &str, id: &str, inputs: serde_json::Value, state: OrderState) {
    assert_eq!(served.order(&format!("/shorts/{short}"), id, inputs).await, 200);
    served.reached(id, state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_set_of_orders() {
    let served = Served::start_with(
        |config| {
            config.max_body = 4096;
            config.inline_limit = 1000;
            config.admin_token = Some(shorts_runtime::Secret::new(TOKEN));
        },
        |b| b,
    )
    .await;
    let admin = serve_admin(&served.app).await;
    let delivered = OrderState::Delivered;
    settled(&served, "echo", "o-ok", json!({"text": "hi"}), delivered).await;
    // The platform refuses the next callback once, then accepts it.
    served.platform.fail_next(1, 503);
    settled(&served, "echo", "o-retry", json!({"text": "again"}), delivered).await;
    settled(&served, "echo", "o-input", json!({"txt": "typo"}), delivered).await;
    settled(&served, "fails", "o-error", json!({}), delivered).await;
    settled(&served, "panics", "o-panic", json!({}), delivered).await;
    settled(&served, "slow", "o-timeout", json!({}), delivered).await;
    settled(&served, "file", "o-file", json!({}), delivered).await;
    // Refused before anything is stored: no auth, a body over SHORTS_MAX_BODY, no such route.
    let (status, _) = served
        .post("/shorts/echo", &[("content-type", "application/json")], "{}")
        .await;
    assert_eq!(status, 401);
    let (status, _) = served
        .post("/shorts/echo", WEBHOOK_HEADERS, vec![b' '; 8192])
        .await;
    assert_eq!(status, 413);
    let (status, _) = served.post("/shorts/nope", WEBHOOK_HEADERS, "{}").await;
    assert_eq!(status, 404);
    // A status request for an order not known is answered 404 too, but on a route: not counted.
    let unknown = client()
        .get(served.url("/shorts/echo/status/o-unknown"))
        .header("x-api-key", shorts_runtime::testing::MockPlatform::WEBHOOK_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // Another method on a webhook route is that short's answer; the health check is no short's.
    let get = client()
        .get(served.url("/shorts/echo"))
        .header("x-api-key", shorts_runtime::testing::MockPlatform::WEBHOOK_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let health = client().get(served.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let metrics = scrape(admin, Some(TOKEN)).await;
    let value = |sample: &str| {
        metrics
            .get(sample)
            .copied()
            .unwrap_or_else(|| panic!("no sample {sample} in {metrics:#?}"))
    };
    for (sample, expected) in [
        (r#"shorts_webhooks_total{short="echo",status="200"}"#, 3.0),
        (r#"shorts_webhooks_total{short="echo",status="401"}"#, 1.0),
        (r#"shorts_webhooks_total{short="echo",status="413"}"#, 1.0),
        (r#"shorts_webhooks_total{short="fails",status="200"}"#, 1.0),
        (r#"shorts_webhooks_total{short="panics",status="200"}"#, 1.0),
        (r#"shorts_webhooks_total{short="slow",status="200"}"#, 1.0),
        (r#"shorts_webhooks_total{short="file",status="200"}"#, 1.0),
        (r#"shorts_webhooks_total{short="echo",status="405"}"#, 1.0),
        (r#"shorts_webhooks_total{short="echo",status="404"}"#, 0.0),
        (r#"shorts_webhooks_total{short="",status="404"}"#, 1.0),
        (r#"shorts_webhooks_total{short="",status="200"}"#, 0.0),
        (r#"shorts_orders_finished_total{short="echo",outcome="ok"}"#, 2.0),
        (
            r#"shorts_orders_finished_total{short="echo",outcome="bad_input"}"#,
            1.0,
        ),
        (
            r#"shorts_orders_finished_total{short="echo",outcome="error"}"#,
            0.0,
        ),
        (
            r#"shorts_orders_finished_total{short="fails",outcome="error"}"#,
            1.0,
        ),
        (
            r#"shorts_orders_finished_total{short="panics",outcome="panic"}"#,
            1.0,
        ),
        (
            r#"shorts_orders_finished_total{short="slow",outcome="timeout"}"#,
            1.0,
        ),
        (r#"shorts_orders_finished_total{short="file",outcome="ok"}"#, 1.0),
        // Every run of echo, the one whose input did not fit included: the handler reads it.
        (r#"shorts_handler_seconds_count{short="echo"}"#, 3.0),
        (r#"shorts_handler_seconds_count{short="slow"}"#, 1.0),
        (r#"shorts_order_seconds_count{short="echo"}"#, 3.0),
        (r#"shorts_order_seconds_count{short="panics"}"#, 1.0),
        (r#"shorts_callback_attempts_total{result="accepted"}"#, 7.0),
        (r#"shorts_callback_attempts_total{result="retry"}"#, 1.0),
        (r#"shorts_callback_attempts_total{result="dead"}"#, 0.0),
        (r#"shorts_callback_attempts_total{result="paused"}"#, 0.0),
        (r#"shorts_orders{state="delivered"}"#, 7.0),
        (r#"shorts_orders{state="received"}"#, 0.0),
        (r#"shorts_orders{state="dead"}"#, 0.0),
        (r#"shorts_running{short="slow"}"#, 0.0),
        ("shorts_upload_bytes_total", 5000.0),
    ] {
        assert_eq!(value(sample), expected, "{sample}");
    }
    // The timed-out run took at least its timeout.
    assert!(value(r#"shorts_handler_seconds_sum{short="slow"}"#) >= 0.2);
    assert!(value(r#"shorts_handler_seconds_bucket{le="0.1",short="slow"}"#) == 0.0);
    served.stop().await;
}

#[tokio::test]
async fn metrics_are_not_on_the_webhook_listener_nor_webhooks_on_the_admin_listener() {
    let served = Served::start().await;
    let admin = serve_admin(&served.app).await;
    let on_webhooks = client().get(served.url("/metrics")).send().await.unwrap();
    assert_eq!(on_webhooks.status(), 404);
    let webhook = served.platform.webhook_body("o-admin", json!({"text": "hi"}));
    let on_admin = served
        .platform
        .send_webhook(&format!("http://{admin}/shorts/echo"), &webhook)
        .await
        .unwrap();
    assert_eq!(on_admin, 404);
    assert!(served.app.order("o-admin").await.unwrap().is_none());
    // Without a token on a loopback address, /metrics answers anyone.
    assert!(
        scrape(admin, None)
            .await
            .contains_key("shorts_upload_bytes_total")
    );
    served.stop().await;
}

#[tokio::test]
async fn metrics_are_off_with_the_admin_listener() {
    let served = Served::start_with(|config| config.admin_bind = None, |b| b).await;
    let admin = serve_admin(&served.app).await;
    let response = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    served.stop().await;
}

/// The value of `attribute` in a `Set-Cookie` header, `Some("")` for a flag.
fn attribute<'a>(cookie: &'a str, attribute: &str) -> Option<&'a str> {
    cookie.split(';').map(str::trim).find_map(|part| {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        name.eq_ignore_ascii_case(attribute).then_some(value)
    })
}

#[tokio::test]
async fn the_token_is_asked_for_as_a_bearer_or_through_the_login_form() {
    let served = Served::start_with(
        |config| config.admin_token = Some(shorts_runtime::Secret::new(TOKEN)),
        |b| b,
    )
    .await;
    let admin = serve_admin(&served.app).await;
    let url = |path: &str| format!("http://{admin}{path}");
    let client = client();

    // No token: an API client is answered 401, a browser sent to the form.
    let api = client.get(url("/metrics")).send().await.unwrap();
    assert_eq!(api.status(), 401);
    assert!(api.headers().contains_key("www-authenticate"));
    let browser = client
        .get(url("/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 303);
    assert_eq!(browser.headers()["location"], "/login");
    // A wrong bearer token is refused; the right one lets in.
    let wrong = client
        .get(url("/metrics"))
        .bearer_auth("an-admin-token-0123456788")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        client
            .get(url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The login form: a wrong token sets no cookie; the right one sets the session cookie.
    let form = client.get(url("/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("name=\"token\""));
    let refused = client
        .post(url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(!refused.headers().contains_key("set-cookie"));
    let login = client
        .post(url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    let (pair, _) = cookie.split_once(';').unwrap();
    assert!(pair.starts_with("shorts_admin=") && pair.len() > "shorts_admin=".len() + 32);
    assert_eq!(attribute(&cookie, "HttpOnly"), Some(""));
    assert_eq!(attribute(&cookie, "SameSite"), Some("Strict"));
    assert_eq!(attribute(&cookie, "Path"), Some("/"));
    assert_eq!(attribute(&cookie, "Secure"), None, "served over plain HTTP");
    // Behind a proxy that terminates TLS, the cookie is `Secure`.
    let proxied = client
        .post(url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    let secure = proxied.headers()["set-cookie"].to_str().unwrap();
    assert_eq!(attribute(secure, "Secure"), Some(""));

    // The session lets in, and its page carries the CSRF token.
    let page = client.get(url("/")).header("cookie", pair).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF field in {html}"))
        .to_owned();
    assert_eq!(
        client
            .get(url("/metrics"))
            .header("cookie", pair)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A state-changing request without the CSRF token, or with another, is refused.
    for body in [String::new(), "csrf=0123".to_owned()] {
        let forged = client
            .post(url("/logout"))
            .header("cookie", pair)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403);
    }
    // With it, the logout ends the session.
    let logout = client
        .post(url("/logout"))
        .header("cookie", pair)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    let after = client
        .get(url("/metrics"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    // Requests with the bearer token need no CSRF token.
    let bearer = client
        .post(url("/logout"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 303);
    served.stop().await;
}

/// `crashy serve` with a clean environment and `vars`, expected to exit at once: its exit code and
/// standard error.
fn serve_exits(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crashy"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SHORTS_CALLBACK_SECRET", "s")
        .env("SHORTS_WEBHOOK_AUTH", "x-api-key: k")
        .env("SHORTS_STORE", "memory")
        .env("SHORTS_BIND", "127.0.0.1:0")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < PATIENCE, "serve did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_admin_listener_open_to_other_machines_needs_a_token() {
    let (code, stderr) = serve_exits(&[("SHORTS_ADMIN_BIND", "0.0.0.0:0")]);
    assert_eq!(code, Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("`SHORTS_ADMIN_TOKEN` is not set"), "{stderr}");
}

#[test]
fn an_admin_address_in_use_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = serve_exits(&[("SHORTS_ADMIN_BIND", &addr)]);
    assert_eq!(code, Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("could not listen on {addr} (SHORTS_ADMIN_BIND)")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("serving"),
        "nothing is served without the admin listener: {stderr}"
    );
}
