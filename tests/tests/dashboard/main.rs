//! The orders dashboard in a real browser: headless Chromium, driven through chromedriver, against
//! an App whose admin listener asks for a token and whose orders go to the mock platform.
//!
//! Each page visited is saved as a PNG under `$CARGO_TARGET_TMPDIR/dashboard/<test>/`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

mod browser;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use browser::Browser;
use serde_json::Value;
use shorts_runtime::prelude::*;
use shorts_runtime::{App, Secret};
use shorts_tests::Served;

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
    browser.click("form[action='/login'] button[type=submit]").await;
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
        for path in ["/", "/metrics"] {
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
        browser.goto(&url("/")).await;
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
        browser.click("form[action='/logout'] button[type=submit]").await;
        browser.goto(&url("/")).await;
        assert_eq!(browser.path().await, "/login");

        browser.close().await;
        served.stop().await;
    })
    .await;
    within.unwrap_or_else(|_| panic!("the test took more than {TEST_LIMIT:?}"));
}
