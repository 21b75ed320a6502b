//! The dashboard's pages through the admin router, on a store scripted order by order.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, StatusCode};
use tower::ServiceExt as _;

use crate::App;
use crate::config::{Secret, StoreConfig};
use crate::store::history::{AttemptResult, CallbackAttempt, RunEnd, RunOutcome};
use crate::store::{NewOrder, OrderState, Settle, Store as _, now_ms};

const TOKEN: &str = "a-dashboard-token-0123456789";
const LONG: Duration = Duration::from_secs(60);

/// An idle app over a memory store, serving `echo` and `report`, asking for [`TOKEN`].
async fn app() -> App {
    App::idle(StoreConfig::Memory, &["echo", "report"], Some(Secret::new(TOKEN)))
        .await
        .expect("app")
}

/// A webhook body with `inputs`.
fn payload(id: &str, inputs: serde_json::Value) -> Bytes {
    Bytes::from(serde_json::json!({"order_id": id, "inputs": inputs}).to_string())
}

/// Accepts an order of `short`; its fence.
async fn accept(app: &App, id: &str, short: &str, inputs: serde_json::Value) -> i64 {
    let order = NewOrder {
        id: id.to_owned(),
        short: short.to_owned(),
        payload: payload(id, inputs),
        callback_url: "http://127.0.0.1:9/api/orders/callback".to_owned(),
        job_token: None,
        hold: crate::store::Hold::Wait,
    };
    let claimed = app
        .store()
        .accept(order, "test", LONG)
        .await
        .expect("accept")
        .expect("new order");
    claimed.fence
}

/// Runs the order once with `outcome`, storing `result` as its callback body.
async fn run(app: &App, id: &str, fence: i64, outcome: RunOutcome, result: serde_json::Value) {
    let started = app.store().start_run(id, fence).await.expect("start");
    assert!(started.is_some(), "run of {id} started");
    let end = RunEnd {
        run: 1,
        outcome,
        error: (outcome != RunOutcome::Ok).then(|| "the short failed".to_owned()),
    };
    let saved = app
        .store()
        .save_result(id, fence, Bytes::from(result.to_string()), Some(end))
        .await
        .expect("save");
    assert!(saved, "result of {id} saved");
}

fn attempt(number: i32, status: u16, result: AttemptResult, error: Option<&str>) -> CallbackAttempt {
    CallbackAttempt {
        number,
        at: now_ms(),
        status: Some(status),
        error: error.map(str::to_owned),
        result,
    }
}

/// An order of `short` run and delivered.
async fn delivered(app: &App, id: &str, short: &str) {
    let fence = accept(app, id, short, serde_json::json!({"text": "hi"})).await;
    run(app, id, fence, RunOutcome::Ok, ok_body(id)).await;
    let settled = app
        .store()
        .settle(
            id,
            fence,
            Settle::Delivered,
            vec![attempt(1, 200, AttemptResult::Accepted, None)],
        )
        .await
        .expect("settle");
    assert!(settled);
}

/// An order of `short` run, whose callback the platform refused for good.
async fn dead(app: &App, id: &str, short: &str, inputs: serde_json::Value) {
    let fence = accept(app, id, short, inputs).await;
    run(app, id, fence, RunOutcome::Ok, ok_body(id)).await;
    let refusal = "the platform refused the callback (400): bad request";
    let settled = app
        .store()
        .settle(
            id,
            fence,
            Settle::Dead(refusal.to_owned()),
            vec![attempt(1, 400, AttemptResult::Dead, Some("bad request"))],
        )
        .await
        .expect("settle");
    assert!(settled);
}

/// An order accepted and released: waiting for a run, nobody working on it.
async fn waiting(app: &App, id: &str, short: &str) {
    let fence = accept(app, id, short, serde_json::json!({"text": "wait"})).await;
    app.store().release_order(id, fence).await.expect("release");
}

fn ok_body(id: &str) -> serde_json::Value {
    serde_json::json!({"ok": true, "order_id": id, "output_type": "text", "result_text": "done"})
}

/// A request to the admin router with the bearer token.
fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request")
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let response = router.clone().oneshot(request).await.expect("answered");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, headers, String::from_utf8(body.to_vec()).expect("utf-8"))
}

/// The page at `path`, which must answer 200.
async fn page(router: &Router, path: &str) -> String {
    let (status, _, html) = send(router, get(path)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {html}");
    html
}

/// The values of `attribute` in `html`, in order.
fn values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let marker = format!("{attribute}=\"");
    html.split(&marker)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// The ids of the rows of the orders table.
fn rows(html: &str) -> Vec<&str> {
    values(html, "data-order")
}

/// The `href` of the element with `id`, unescaped, if there is one.
fn link(html: &str, id: &str) -> Option<String> {
    let start = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html[..start].rfind('<')?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    values(tag, "href").first().map(|href| href.replace("&amp;", "&"))
}

#[tokio::test]
async fn the_overview_counts_the_orders() {
    let app = app().await;
    for i in 0..3 {
        delivered(&app, &format!("d{i}"), "echo").await;
    }
    dead(&app, "x1", "report", serde_json::json!({})).await;
    dead(&app, "x2", "report", serde_json::json!({})).await;
    waiting(&app, "w1", "echo").await;
    let router = app.admin_router();
    let html = page(&router, "/").await;
    for (state, count) in [
        ("received", 1),
        ("delivering", 0),
        ("paused", 0),
        ("delivered", 3),
        ("dead", 2),
    ] {
        let card = format!(
            "<li data-state=\"{state}\"><a href=\"/orders?state={state}\"><span class=\"count\">{count}</span>"
        );
        assert!(html.contains(&card), "no {card} in {html}");
    }
    assert!(
        html.contains("<span class=\"count\">6</span>all orders"),
        "{html}"
    );
    // The chart: accessible, with the day's numbers written out.
    assert!(
        html.contains("<svg class=\"chart\" id=\"hourly-chart\""),
        "{html}"
    );
    assert!(html.contains("role=\"img\""));
    assert!(html.contains("<title id=\"hourly-title\">"));
    let summary = "6 orders in the last 24 hours, 2 of them failed";
    assert!(
        html.contains(&format!("<p id=\"hourly-total\">{summary}.</p>")),
        "{html}"
    );
    assert_eq!(values(&html, "data-hour").len(), 24);
    // Handler times: each short with its runs; callbacks: 3 of 5 accepted.
    assert!(
        html.contains("<tr data-short=\"echo\"><td><code>echo</code></td><td class=\"num\">3</td>"),
        "{html}"
    );
    assert!(
        html.contains("<tr data-short=\"report\"><td><code>report</code></td><td class=\"num\">2</td>"),
        "{html}"
    );
    assert!(html.contains("data-accepted=\"3\" data-attempts=\"5\""), "{html}");
    assert!(html.contains("60.0%"), "{html}");
    // The webhook routes, as the page listed them before the dashboard.
    assert!(html.contains("<code>POST /shorts/echo</code>"), "{html}");
    assert!(html.contains("<code>POST /shorts/report</code>"), "{html}");
}

#[tokio::test]
async fn the_list_filters_by_state_short_and_id() {
    let app = app().await;
    delivered(&app, "alpha-1", "echo").await;
    dead(&app, "alpha-2", "report", serde_json::json!({})).await;
    delivered(&app, "beta-1", "report").await;
    dead(&app, "beta-2", "echo", serde_json::json!({})).await;
    waiting(&app, "gamma-1", "echo").await;
    let router = app.admin_router();

    let all = page(&router, "/orders").await;
    assert_eq!(
        rows(&all),
        ["gamma-1", "beta-2", "beta-1", "alpha-2", "alpha-1"],
        "newest first"
    );
    assert!(
        all.contains("<tr data-order=\"beta-2\" data-state=\"dead\">"),
        "{all}"
    );
    assert!(
        all.contains("<a href=\"/orders/beta-2\"><code>beta-2</code></a>"),
        "{all}"
    );
    assert!(all.contains("<form id=\"filter\" method=\"get\" action=\"/orders\">"));
    assert!(all.contains("<button id=\"apply\" type=\"submit\">"));
    assert!(link(&all, "next").is_none(), "one page");

    let dead = page(&router, "/orders?state=dead&short=any&q=").await;
    assert_eq!(rows(&dead), ["beta-2", "alpha-2"]);
    assert!(
        dead.contains("<option value=\"dead\" selected>dead</option>"),
        "{dead}"
    );
    assert!(
        dead.contains("the platform refused the callback (400): bad request"),
        "the last error is shown: {dead}"
    );
    let report = page(&router, "/orders?state=any&short=report").await;
    assert_eq!(rows(&report), ["beta-1", "alpha-2"]);
    assert!(report.contains("<option value=\"report\" selected>report</option>"));
    let both = page(&router, "/orders?state=dead&short=echo").await;
    assert_eq!(rows(&both), ["beta-2"]);
    let prefix = page(&router, "/orders?q=alpha").await;
    assert_eq!(rows(&prefix), ["alpha-2", "alpha-1"]);
    assert!(prefix.contains("name=\"q\" value=\"alpha\""), "{prefix}");
    let exact = page(&router, "/orders?q=+beta-1+").await;
    assert_eq!(rows(&exact), ["beta-1"]);
    let none = page(&router, "/orders?q=zeta").await;
    assert!(rows(&none).is_empty());
    assert!(none.contains("No orders match."));
    let (status, _, html) = send(&router, get("/orders?state=lost")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    let (status, _, _) = send(&router, get("/orders?after=nonsense")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_list_pages_through_more_than_fifty_orders_with_its_filters() {
    let app = app().await;
    for i in 0..120 {
        delivered(&app, &format!("p{i:03}"), "echo").await;
    }
    dead(&app, "p-dead", "echo", serde_json::json!({})).await;
    let router = app.admin_router();
    let mut seen = Vec::new();
    let mut path = "/orders?state=delivered&short=echo".to_owned();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 4, "too many pages");
        let html = page(&router, &path).await;
        let ids: Vec<String> = rows(&html).into_iter().map(str::to_owned).collect();
        assert!(ids.len() <= 50);
        seen.extend(ids);
        match link(&html, "next") {
            Some(next) => {
                assert!(
                    next.starts_with("/orders?state=delivered&short=echo&after="),
                    "{next}"
                );
                path = next;
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..120).rev().map(|i| format!("p{i:03}")).collect();
    assert_eq!(seen, expected, "every delivered order once, newest first");
}

#[tokio::test]
async fn the_order_page_shows_its_timeline_files_and_escapes_what_the_buyer_sent() {
    let app = app().await;
    let secret_content = "the file's secret content";
    let inputs = serde_json::json!({
        "text": "<script>alert('x')</script>",
        "photo": {
            "filename": "cat <1>.png",
            "mime_type": "image/png",
            "file_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret_content),
        },
    });
    dead(&app, "o-1", "echo", inputs).await;
    let fence = accept(&app, "o-file", "echo", serde_json::json!({})).await;
    let uploaded = serde_json::json!({"ok": true, "order_id": "o-file", "output_type": "file", "files": [
        {"filename": "report.pdf", "mime_type": "application/pdf", "object_key": "orders/o-file/report.pdf"},
        {"filename": "inline.txt", "mime_type": "text/plain", "file_base64": "aGVsbG8="},
    ]});
    run(&app, "o-file", fence, RunOutcome::Ok, uploaded).await;
    let router = app.admin_router();

    let html = page(&router, "/orders/o-1").await;
    assert!(html.contains("<span id=\"state\" data-state=\"dead\""), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("&lt;script&gt;alert('x')&lt;/script&gt;"), "{html}");
    // The file: name, type and size, never its contents.
    assert!(html.contains("cat &lt;1&gt;.png"), "{html}");
    assert!(html.contains("image/png"));
    assert!(html.contains(&format!("{} B", secret_content.len())), "{html}");
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret_content);
    assert!(
        !html.contains(&encoded) && !html.contains(secret_content),
        "{html}"
    );
    // The timeline: received, the run, the refused callback.
    let timeline = html
        .split("<ol id=\"timeline\">")
        .nth(1)
        .and_then(|rest| rest.split("</ol>").next())
        .expect("a timeline");
    assert_eq!(values(timeline, "data-event"), ["received", "run", "callback"]);
    assert!(timeline.contains("data-outcome=\"ok\""));
    assert!(timeline.contains("data-result=\"dead\""));
    assert!(timeline.contains("(HTTP 400)"));
    // The error, and the action a dead order allows.
    assert!(html.contains("the platform refused the callback (400): bad request"));
    assert_eq!(link(&html, "retry").as_deref(), Some("/orders/o-1/retry"));
    assert!(link(&html, "fail").is_none(), "a dead order is not failed");

    let html = page(&router, "/orders/o-file").await;
    assert!(html.contains("data-state=\"delivering\""), "{html}");
    assert!(html.contains("orders/o-file/report.pdf"), "{html}");
    assert!(html.contains("report.pdf") && html.contains("inline.txt"));
    assert!(html.contains("5 B"), "the inline file's size: {html}");
    assert!(!html.contains("aGVsbG8="), "{html}");
    assert_eq!(link(&html, "fail").as_deref(), Some("/orders/o-file/fail"));
    assert!(link(&html, "retry").is_none());

    let (status, _, html) = send(&router, get("/orders/nope%3Cb%3E")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("<code>nope&lt;b&gt;</code>"), "{html}");
}

#[tokio::test]
async fn an_order_id_with_markup_is_text_and_its_link_one_path_segment() {
    let app = app().await;
    let id = "a/<b>&\"c\" d";
    delivered(&app, id, "echo").await;
    let router = app.admin_router();
    let html = page(&router, "/orders").await;
    assert!(
        html.contains("data-order=\"a/&lt;b&gt;&amp;&quot;c&quot; d\""),
        "{html}"
    );
    let path = "/orders/a%2F%3Cb%3E%26%22c%22%20d";
    assert!(html.contains(&format!("href=\"{path}\"")), "{html}");
    let detail = page(&router, path).await;
    assert!(
        detail.contains("<code>a/&lt;b&gt;&amp;&quot;c&quot; d</code>"),
        "{detail}"
    );
}

/// Logs in through the form; the session cookie and the CSRF token of its pages.
async fn login(router: &Router) -> (String, String) {
    let (status, headers, _) = send(
        router,
        Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={TOKEN}")))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers["set-cookie"].to_str().expect("ascii");
    let cookie = cookie.split(';').next().expect("pair").to_owned();
    let (_, _, html) = send(
        router,
        Request::get("/orders")
            .header("cookie", &cookie)
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_owned();
    (cookie, csrf)
}

fn post_form(path: &str, cookie: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

#[tokio::test]
async fn actions_are_confirmed_need_the_csrf_token_and_are_shown_after() {
    let app = app().await;
    dead(&app, "o-dead", "echo", serde_json::json!({})).await;
    waiting(&app, "o-wait", "echo").await;
    let router = app.admin_router();
    let (cookie, csrf) = login(&router).await;
    let session_get = |path: &str| {
        Request::get(path)
            .header("cookie", &cookie)
            .body(Body::empty())
            .expect("request")
    };

    // The confirmation page carries the session's CSRF token.
    let (status, _, confirm) = send(&router, session_get("/orders/o-dead/retry")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        confirm.contains("<form id=\"action\" method=\"post\" action=\"/orders/o-dead/retry\">"),
        "{confirm}"
    );
    assert!(
        confirm.contains(&format!("name=\"csrf\" value=\"{csrf}\"")),
        "{confirm}"
    );
    assert!(confirm.contains("id=\"confirm\""));
    // Without it, or with another, nothing is done.
    for body in ["", "csrf=0123"] {
        let (status, _, _) = send(&router, post_form("/orders/o-dead/retry", &cookie, body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let record = app.store().get("o-dead").await.expect("get").expect("order");
    assert_eq!(record.state, OrderState::Dead);
    // With it, the order is retried and its page says so.
    let (status, headers, _) = send(
        &router,
        post_form("/orders/o-dead/retry", &cookie, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/orders/o-dead?done=retried");
    let record = app.store().get("o-dead").await.expect("get").expect("order");
    assert_eq!(record.state, OrderState::Delivering);
    let (_, _, html) = send(&router, session_get("/orders/o-dead?done=retried")).await;
    assert!(html.contains("data-done=\"retried\""), "{html}");
    // A retry of an order no longer dead is refused on the confirmation page.
    let (status, _, _) = send(&router, session_get("/orders/o-dead/retry")).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Failing asks for the message.
    let (status, _, form) = send(&router, session_get("/orders/o-wait/fail")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        form.contains("<textarea id=\"message\" name=\"message\" required"),
        "{form}"
    );
    let (status, _, _) = send(
        &router,
        post_form("/orders/o-wait/fail", &cookie, "message=refund"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
    let (status, _, again) = send(
        &router,
        post_form("/orders/o-wait/fail", &cookie, &format!("csrf={csrf}&message=+")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty message");
    assert!(again.contains("Type the message"), "{again}");
    assert_eq!(
        app.store()
            .get("o-wait")
            .await
            .expect("get")
            .expect("order")
            .state,
        OrderState::Received
    );
    let message = "refunded: <the site> is down";
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &csrf)
        .append_pair("message", message)
        .finish();
    let (status, headers, _) = send(&router, post_form("/orders/o-wait/fail", &cookie, &body)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/orders/o-wait?done=failed");
    let record = app.store().get("o-wait").await.expect("get").expect("order");
    assert_eq!(record.state, OrderState::Delivering);
    let result: serde_json::Value =
        serde_json::from_slice(&record.result.expect("a failure callback")).expect("json");
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"], message);
    let (_, _, html) = send(&router, session_get("/orders/o-wait?done=failed")).await;
    assert!(html.contains("data-done=\"failed\""), "{html}");
    assert!(
        html.contains("Failed by an operator: <q>refunded: &lt;the site&gt; is down</q>"),
        "{html}"
    );

    // Scripts with the bearer token need no CSRF token.
    let (status, headers, _) = send(
        &router,
        Request::post("/orders/nope/retry")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{headers:?}");
}

#[tokio::test]
async fn every_page_needs_the_token_or_a_session() {
    let app = app().await;
    dead(&app, "o-1", "echo", serde_json::json!({})).await;
    let router = app.admin_router();
    let pages = [
        "/",
        "/orders",
        "/orders?state=dead",
        "/orders/o-1",
        "/orders/o-1/retry",
        "/orders/o-1/fail",
    ];
    for path in pages {
        let (status, _, _) = send(&router, Request::get(path).body(Body::empty()).expect("request")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, headers, _) = send(
            &router,
            Request::get(path)
                .header("accept", "text/html")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(headers["location"], "/login");
        let (status, _, _) = send(
            &router,
            Request::get(path)
                .header("authorization", "Bearer a-dashboard-token-0123456780")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with a wrong token");
    }
    for path in ["/orders/o-1/retry", "/orders/o-1/fail"] {
        let (status, _, _) = send(
            &router,
            Request::post(path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("message=x"))
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "POST {path}");
    }
    assert_eq!(
        app.store().get("o-1").await.expect("get").expect("order").state,
        OrderState::Dead
    );
}

/// Collects what a subscriber writes.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_action_is_audited_with_who_did_it() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(lines.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let app = app().await;
    dead(&app, "o-dead", "echo", serde_json::json!({})).await;
    waiting(&app, "o-wait", "echo").await;
    let router = app.admin_router();
    let (status, _, _) = send(
        &router,
        Request::post("/orders/o-dead/retry")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (cookie, csrf) = login(&router).await;
    let (status, _, _) = send(
        &router,
        post_form(
            "/orders/o-wait/fail",
            &cookie,
            &format!("csrf={csrf}&message=the+site+is+down"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    let written = lines.0.lock().map(|b| b.clone()).unwrap_or_default();
    let audit: Vec<serde_json::Value> = String::from_utf8_lossy(&written)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "shorts::admin" && line["fields"]["action"].is_string())
        .collect();
    assert_eq!(audit.len(), 2, "{}", String::from_utf8_lossy(&written));
    assert!(audit.iter().all(|line| line["level"] == "INFO"));
    let fields = |i: usize, name: &str| audit[i]["fields"][name].clone();
    assert_eq!(
        (
            fields(0, "action"),
            fields(0, "order_id"),
            fields(0, "who"),
            fields(0, "result")
        ),
        ("retry".into(), "o-dead".into(), "token".into(), "retried".into())
    );
    assert_eq!(
        (
            fields(1, "action"),
            fields(1, "order_id"),
            fields(1, "who"),
            fields(1, "result")
        ),
        ("fail".into(), "o-wait".into(), "session".into(), "failed".into())
    );
    assert_eq!(fields(1, "buyer_message"), "the site is down");
    assert!(
        audit
            .iter()
            .all(|line| line["fields"]["message"] == "admin action")
    );
}

#[tokio::test]
async fn the_list_shows_the_fields_of_orders_json() {
    let app = app().await;
    dead(&app, "o-json", "report", serde_json::json!({})).await;
    let router = app.admin_router();
    let html = page(&router, "/orders").await;
    let json = app
        .store()
        .orders_page(&crate::store::OrderFilter::default(), None, 1)
        .await
        .expect("page")
        .orders[0]
        .to_json();
    let header = html.split("<thead>").nth(1).expect("a header");
    let fields = values(header.split("</thead>").next().unwrap_or_default(), "data-field");
    assert_eq!(
        fields,
        ["id", "short", "state", "received_at", "runs", "last_error"]
    );
    for field in &fields {
        assert!(json.get(field).is_some(), "`orders --json` has no `{field}`");
    }
    let row = html.split("<tr data-order=\"o-json\"").nth(1).expect("the row");
    for (field, shown) in [
        ("id", format!("<code>{}</code>", json["id"].as_str().expect("id"))),
        ("short", json["short"].as_str().expect("short").to_owned()),
        (
            "state",
            format!(">{}</span>", json["state"].as_str().expect("state")),
        ),
        (
            "received_at",
            format!("datetime=\"{}\"", json["received_at"].as_str().expect("time")),
        ),
        ("runs", format!(">{}", json["runs"])),
        (
            "last_error",
            json["last_error"].as_str().expect("error").to_owned(),
        ),
    ] {
        let cell = row
            .split(&format!(" data-field=\"{field}\""))
            .nth(1)
            .and_then(|rest| rest.split("</td>").next())
            .unwrap_or_else(|| panic!("no {field} cell in {row}"));
        assert!(cell.contains(&shown), "{field}: {shown} not in {cell}");
    }
}

/// Without a token, only requests for a loopback name are answered: a page on another name that
/// resolves to 127.0.0.1 (DNS rebinding) can neither read the dashboard nor act.
#[tokio::test]
async fn without_a_token_only_loopback_names_are_answered() {
    let app = App::idle(StoreConfig::Memory, &["echo"], None)
        .await
        .expect("app");
    let router = app.admin_router();
    let with_host = |method: &str, host: &str| {
        Request::builder()
            .method(method)
            .uri("/orders")
            .header("host", host)
            .body(Body::empty())
            .expect("request")
    };
    for host in [
        "localhost:9090",
        "LOCALHOST",
        "127.0.0.1:9090",
        "127.0.0.1",
        "[::1]:9090",
    ] {
        let (status, _, body) = send(&router, with_host("GET", host)).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    for host in [
        "evil.example",
        "evil.example:9090",
        "127.0.0.1.evil.example",
        "[::2]:9090",
        "localhost.evil",
    ] {
        let (status, _, body) = send(&router, with_host("GET", host)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {body}");
        assert!(body.contains("SHORTS_ADMIN_TOKEN"), "{body}");
        let (status, _, _) = send(&router, with_host("POST", host)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}");
    }
}
