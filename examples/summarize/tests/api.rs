//! The short end to end through the platform's mock, against a scripted model API on 127.0.0.1:
//! answers, faults and retries, and the exact callback each gives.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

mod stub;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shorts_runtime::testing::{Callback, FileContents, MockPlatform};
use shorts_runtime::{App, FileInput, Order, Short};
use stub::{KEY, MODEL, Reply, Stub, assert_no_part_of_the_key};
use summarize_short::{Config, SummarizeInput, summarize};

/// The longest any order here may take to reach its callback.
const CALLBACK_WAIT: Duration = Duration::from_secs(30);

/// A configuration pointed at `stub`, with short waits.
fn config(stub: &Stub) -> Config {
    Config {
        base_url: stub.base_url(),
        model: MODEL.to_owned(),
        timeout: Duration::from_secs(5),
        retry_base: Duration::from_millis(20),
        max_retry_wait: Duration::from_secs(3),
        max_attempts: 4,
        ..Config::new(KEY)
    }
}

fn notes(text: &str) -> Value {
    json!({ "document": [FileInput::new("notes.txt", "text/plain", text.as_bytes())], "tone": "friendly" })
}

/// A callback and the files it returned, decoded.
struct Outcome {
    callback: Callback,
    files: Vec<(String, Vec<u8>)>,
    /// From the webhook sent to the callback received.
    elapsed: Duration,
}

/// Runs one order with `inputs` through a server built on `config`, and returns its callback.
async fn order(config: Config, inputs: Value) -> Outcome {
    let platform = MockPlatform::start().await.expect("the mock platform starts");
    let short = Short::builder("summarize", move |input: SummarizeInput, _order: Order| {
        let config = config.clone();
        async move { summarize(&config, input).await }
    })
    .timeout(CALLBACK_WAIT)
    .build();
    let app = App::builder()
        .config(platform.config())
        .without_registered()
        .short(short)
        .build()
        .await
        .expect("the app builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    let order_id = "550e8400-e29b-41d4-a716-446655440000";
    let body = platform.webhook_body(order_id, inputs);
    let started = Instant::now();
    let status = platform
        .send_webhook(&format!("http://{addr}/shorts/summarize"), &body)
        .await
        .expect("the webhook is sent");
    assert_eq!(status, 200);
    let callback = platform
        .wait_for(order_id, CALLBACK_WAIT)
        .await
        .expect("a callback within the wait");
    let elapsed = started.elapsed();
    assert!(
        !callback.body.to_string().contains(KEY),
        "the key is in the callback: {}",
        callback.body
    );
    // The files as the buyer gets them.
    let mut files = Vec::new();
    for file in platform.files(&callback).expect("the files are readable") {
        let FileContents::Inline(bytes) = file.contents else {
            panic!("{} was not inline", file.filename);
        };
        assert!(!String::from_utf8_lossy(&bytes).contains(KEY));
        files.push((file.filename, bytes));
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Outcome {
        callback,
        files,
        elapsed,
    }
}

/// The `error` of a failure callback.
fn error(outcome: &Outcome) -> &str {
    let callback = &outcome.callback;
    assert!(!callback.ok(), "expected a failure: {}", callback.body);
    callback.body["error"].as_str().unwrap_or_default()
}

/// The named file of a success callback: its MIME type and its contents as text.
fn file(outcome: &Outcome, name: &str) -> (String, String) {
    let files = outcome.callback.body["files"].as_array().expect("a files array");
    let sent = files
        .iter()
        .find(|f| f["filename"] == name)
        .unwrap_or_else(|| panic!("no {name} in {}", outcome.callback.body));
    let contents = outcome
        .files
        .iter()
        .find(|(filename, _)| filename == name)
        .map(|(_, bytes)| String::from_utf8(bytes.clone()).expect("UTF-8"))
        .unwrap_or_default();
    (
        sent["mime_type"].as_str().unwrap_or_default().to_owned(),
        contents,
    )
}

fn good_answer() -> Value {
    json!({
        "summary": "Q3 <b>\"sales\"</b> & 'costs' rose.\n\nShip by Friday.",
        "items": [
            { "name": "Ada Lovelace", "detail": "Owner of the \"launch\", due Friday" },
            { "name": "Invoice 42", "detail": "120 EUR, net 30" },
            { "name": "=HYPERLINK(\"x\")", "detail": "multi\nline" },
        ],
    })
}

#[tokio::test]
async fn a_summary_comes_back_as_an_html_report_and_a_csv() {
    let stub = Stub::always(Reply::answer(&good_answer())).await;
    let outcome = order(
        config(&stub),
        notes("Ada ships the launch on Friday. Invoice 42: 120 EUR."),
    )
    .await;
    assert!(outcome.callback.ok(), "{}", outcome.callback.body);
    assert_eq!(outcome.callback.body["output_type"], "file");
    let names: Vec<&str> = outcome.callback.body["files"]
        .as_array()
        .map(|files| files.iter().filter_map(|f| f["filename"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["report.html", "items.csv"]);

    let (mime, html) = file(&outcome, "report.html");
    assert_eq!(mime, "text/html");
    assert!(html.starts_with("<!doctype html>\n"), "{html}");
    assert!(html.contains("<title>Summary of notes.txt</title>"), "{html}");
    assert!(html.contains("<p class=\"tone\">Tone: friendly</p>"), "{html}");
    assert!(
        html.contains(
            "<p>Q3 &lt;b&gt;&quot;sales&quot;&lt;/b&gt; &amp; &#39;costs&#39; rose.</p>\n<p>Ship by Friday.</p>\n"
        ),
        "{html}"
    );
    assert!(
        html.contains("<tr><td>Ada Lovelace</td><td>Owner of the &quot;launch&quot;, due Friday</td></tr>"),
        "{html}"
    );
    assert!(!html.contains("<b>"), "{html}");

    let (mime, csv) = file(&outcome, "items.csv");
    assert_eq!(mime, "text/csv");
    assert_eq!(
        csv,
        "name,detail\r\n\
         Ada Lovelace,\"Owner of the \"\"launch\"\", due Friday\"\r\n\
         Invoice 42,\"120 EUR, net 30\"\r\n\
         \"'=HYPERLINK(\"\"x\"\")\",\"multi\nline\"\r\n"
    );

    // What the API was sent: the key as a bearer token, the model, the tone and the file.
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(seen[0].body["model"], MODEL);
    let messages = seen[0].body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"]
            .as_str()
            .unwrap()
            .contains("a warm, friendly tone")
    );
    assert_eq!(messages[1]["role"], "user");
    assert_eq!(
        messages[1]["content"],
        "Document `notes.txt` (text/plain):\n\nAda ships the launch on Friday. Invoice 42: 120 EUR."
    );
}

#[tokio::test]
async fn an_answer_in_a_code_fence_and_no_items_is_still_read() {
    let content = "Sure:\n```json\n{\"summary\": \"Nothing to list.\", \"items\": []}\n```";
    let stub = Stub::always(Reply::content(content)).await;
    let inputs = json!({ "document": [FileInput::new("data.csv", "text/csv", b"a,b\n1,2\n")] });
    let outcome = order(config(&stub), inputs).await;
    let (_, html) = file(&outcome, "report.html");
    assert!(html.contains("<p>Nothing to list.</p>"), "{html}");
    assert!(html.contains("<p>No items were found.</p>"), "{html}");
    assert!(html.contains("Tone: neutral"), "{html}");
    assert_eq!(file(&outcome, "items.csv").1, "name,detail\r\n");
    let seen = stub.seen();
    assert!(
        seen[0].body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("a neutral, factual tone")
    );
    assert!(
        seen[0].body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .starts_with("Document `data.csv` (text/csv):")
    );
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let stub = Stub::start(vec![Reply::rate_limited(Some(1))], Reply::answer(&good_answer())).await;
    let outcome = order(config(&stub), notes("text")).await;
    assert!(outcome.callback.ok(), "{}", outcome.callback.body);
    let seen = stub.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_exponentially() {
    let stub = Stub::start(
        vec![Reply::rate_limited(None), Reply::rate_limited(None)],
        Reply::answer(&good_answer()),
    )
    .await;
    let config = Config {
        retry_base: Duration::from_millis(300),
        ..config(&stub)
    };
    let outcome = order(config, notes("text")).await;
    assert!(outcome.callback.ok(), "{}", outcome.callback.body);
    let seen = stub.seen();
    assert_eq!(seen.len(), 3);
    // 300 ms, then 600 ms: each at least that, and not much more (a loaded machine is slow).
    let (first, second) = (seen[1].at - seen[0].at, seen[2].at - seen[1].at);
    assert!(
        first >= Duration::from_millis(300) && first < Duration::from_millis(300 + 1500),
        "first wait {first:?}"
    );
    assert!(
        second >= Duration::from_millis(600) && second < Duration::from_millis(600 + 1500),
        "second wait {second:?}"
    );
}

#[tokio::test]
async fn a_backoff_is_capped_at_the_longest_wait() {
    let stub = Stub::start(
        vec![Reply::rate_limited(None), Reply::rate_limited(None)],
        Reply::answer(&good_answer()),
    )
    .await;
    let config = Config {
        retry_base: Duration::from_secs(60),
        max_retry_wait: Duration::from_millis(100),
        ..config(&stub)
    };
    let outcome = order(config, notes("text")).await;
    assert!(outcome.callback.ok(), "{}", outcome.callback.body);
    let seen = stub.seen();
    assert_eq!(seen.len(), 3);
    for pair in seen.windows(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_secs(2),
            "waited {waited:?}"
        );
    }
}

#[tokio::test]
async fn a_retry_after_longer_than_the_longest_wait_is_not_waited_for() {
    let stub = Stub::start(
        vec![Reply::rate_limited(Some(3600))],
        Reply::answer(&good_answer()),
    )
    .await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API is rate limiting requests (429 Too Many Requests) and asks to wait 3600 s, \
         longer than the 3 s an order waits: try again later"
    );
    assert!(outcome.elapsed < Duration::from_secs(5), "{:?}", outcome.elapsed);
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn a_503_is_retried_after_its_retry_after() {
    let stub = Stub::start(
        vec![Reply::error(503, "overloaded").with_header("retry-after", "1")],
        Reply::answer(&good_answer()),
    )
    .await;
    let outcome = order(config(&stub), notes("text")).await;
    assert!(outcome.callback.ok(), "{}", outcome.callback.body);
    let seen = stub.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
}

#[tokio::test]
async fn a_503_asking_for_too_long_a_wait_is_reported() {
    let stub = Stub::start(
        vec![Reply::error(503, "down for maintenance").with_header("retry-after", "600")],
        Reply::answer(&good_answer()),
    )
    .await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API is unavailable (503 Service Unavailable) and asks to wait 600 s, longer \
         than the 3 s an order waits: try again later: down for maintenance"
    );
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn no_retry_is_made_that_would_end_after_the_deadline() {
    // Each 429 takes 1 s; a retry needs its wait and a whole 2 s timeout, which 2.5 s cannot hold.
    let stub = Stub::always(Reply::slow(Duration::from_secs(1), Reply::rate_limited(None))).await;
    let config = Config {
        timeout: Duration::from_secs(2),
        deadline: Duration::from_millis(2500),
        max_attempts: 10,
        ..config(&stub)
    };
    let outcome = order(config, notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API did not answer in time: it was still rate limiting requests when the 2.5 s \
         allowed ran out (429 Too Many Requests, 1 attempt): try again in a few minutes"
    );
    assert_eq!(stub.seen().len(), 1);
    assert!(
        outcome.elapsed < Duration::from_millis(2500),
        "{:?}",
        outcome.elapsed
    );
}

#[tokio::test]
async fn retries_go_on_while_they_fit_before_the_deadline() {
    // Quick 500s: retries fit until the 10th attempt, so the attempts run out first.
    let stub = Stub::always(Reply::error(500, "oops")).await;
    let quick = Config {
        timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(20),
        max_attempts: 10,
        retry_base: Duration::from_millis(1),
        max_retry_wait: Duration::from_millis(1),
        ..config(&stub)
    };
    let outcome = order(quick, notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API failed (500 Internal Server Error, 10 attempts): oops"
    );
    // A retry must leave a whole 1 s timeout before a 1.6 s deadline: one fits after the 500
    // that came at 0.4 s, none after the one at 0.8 s.
    let stub = Stub::always(Reply::slow(Duration::from_millis(400), Reply::error(500, "oops"))).await;
    let cut = Config {
        timeout: Duration::from_secs(1),
        deadline: Duration::from_millis(1600),
        max_attempts: 10,
        retry_base: Duration::from_millis(1),
        ..config(&stub)
    };
    let outcome = order(cut, notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API did not answer in time: it was still failing when the 1.6 s allowed ran \
         out (500 Internal Server Error, 2 attempts): oops"
    );
    assert_eq!(stub.seen().len(), 2);
    assert!(
        outcome.elapsed < Duration::from_millis(1600),
        "{:?}",
        outcome.elapsed
    );
}

#[tokio::test]
async fn the_first_request_is_cut_to_the_deadline() {
    let stub = Stub::always(Reply::slow(
        Duration::from_secs(20),
        Reply::answer(&good_answer()),
    ))
    .await;
    let config = Config {
        deadline: Duration::from_millis(500),
        ..config(&stub)
    };
    let outcome = order(config, notes("text")).await;
    assert_eq!(error(&outcome), "the model API did not answer within 0.5 s");
    assert!(outcome.elapsed < Duration::from_secs(5), "{:?}", outcome.elapsed);
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn a_429_that_lasts_is_a_rate_limit_error_after_a_bounded_number_of_attempts() {
    let stub = Stub::always(Reply::rate_limited(None)).await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API is rate limiting requests (429 Too Many Requests, 4 attempts): try again in a few minutes"
    );
    assert_eq!(stub.seen().len(), 4);
}

#[tokio::test]
async fn an_exhausted_quota_is_not_retried() {
    let quota =
        json!({ "error": { "message": "You exceeded your current quota.", "code": "insufficient_quota" } });
    let stub = Stub::always(Reply::json(429, &quota)).await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API refused the request (429 Too Many Requests): You exceeded your current quota."
    );
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn a_5xx_is_retried_then_reported() {
    let stub = Stub::always(Reply::error(
        500,
        "The server had an error while processing your request.",
    ))
    .await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API failed (500 Internal Server Error, 4 attempts): The server had an error while processing your request."
    );
    assert_eq!(stub.seen().len(), 4);
}

#[tokio::test]
async fn a_passing_5xx_is_retried() {
    let stub = Stub::start(
        vec![Reply::text(502, "<html>bad gateway</html>")],
        Reply::answer(&good_answer()),
    )
    .await;
    let outcome = order(config(&stub), notes("text")).await;
    assert!(outcome.callback.ok(), "{}", outcome.callback.body);
    assert_eq!(stub.seen().len(), 2);
}

#[tokio::test]
async fn a_401_quotes_the_apis_message_without_the_key() {
    // Some servers echo the key they refused; it must not reach the buyer.
    let message = format!(
        "Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."
    );
    let stub = Stub::always(Reply::error(401, &message)).await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API refused the request (401 Unauthorized) (check OPENAI_API_KEY): Incorrect API key provided: <redacted>. You can find your API key at https://platform.openai.com/account/api-keys."
    );
    assert_eq!(stub.seen().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn a_400_quotes_a_long_message_cut_short() {
    let message = format!(
        "This model's maximum context length is 128000 tokens. {}",
        "x".repeat(1000)
    );
    let stub = Stub::always(Reply::error(400, &message)).await;
    let outcome = order(config(&stub), notes("text")).await;
    let error = error(&outcome);
    let prefix = "the model API refused the request (400 Bad Request): This model's maximum context length is 128000 tokens. xxx";
    assert!(error.starts_with(prefix), "{error}");
    assert!(error.ends_with("x…"), "{error}");
    let quoted = &error["the model API refused the request (400 Bad Request): ".len()..];
    assert_eq!(quoted.chars().count(), 301);
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn an_answer_that_is_not_the_json_asked_for_is_a_clear_error() {
    let stub = Stub::always(Reply::content("Here is a summary: the document is about sales.")).await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        r#"the model's answer is not the expected JSON ({"summary": "...", "items": [...]}): it began "Here is a summary: the document is about sales.""#
    );
}

#[tokio::test]
async fn an_api_answer_that_is_not_json_is_a_clear_error() {
    let stub = Stub::always(Reply::text(200, "upstream says hello")).await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API's answer is not JSON: it began upstream says hello"
    );
}

#[tokio::test]
async fn an_answer_without_choices_is_a_clear_error() {
    let stub = Stub::always(Reply::json(
        200,
        &json!({ "object": "chat.completion", "choices": [] }),
    ))
    .await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API's answer has no text (no `choices[0].message.content`)"
    );
}

#[tokio::test]
async fn a_slow_api_times_out_without_a_retry() {
    let stub = Stub::always(Reply::slow(
        Duration::from_secs(20),
        Reply::answer(&good_answer()),
    ))
    .await;
    let config = Config {
        timeout: Duration::from_millis(500),
        ..config(&stub)
    };
    let outcome = order(config, notes("text")).await;
    assert_eq!(error(&outcome), "the model API did not answer within 0.5 s");
    assert!(outcome.elapsed < Duration::from_secs(5), "{:?}", outcome.elapsed);
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn an_unreachable_api_is_reported_with_its_address_only() {
    // A port held bound, but not listening, for the whole test: connections are refused, and no
    // other test can take it meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let config = Config {
        base_url: format!("http://user:secret@127.0.0.1:{port}/v1?token=abc"),
        max_attempts: 2,
        retry_base: Duration::from_millis(20),
        ..Config::new(KEY)
    };
    let outcome = order(config, notes("text")).await;
    let error = error(&outcome);
    assert!(
        error.starts_with(&format!(
            "could not reach the model API at http://127.0.0.1:{port} (2 attempts): "
        )),
        "{error}"
    );
    assert!(!error.contains("token=abc"), "{error}");
    assert!(!error.contains("secret"), "{error}");
    assert!(error.to_lowercase().contains("refused"), "{error}");
    drop(socket);
}

#[tokio::test]
async fn a_2xx_that_is_not_json_never_quotes_the_key() {
    // The key straddles the 200th character quoted: cut before it is redacted, its start shows.
    let body = format!("{} {KEY} and more", "y".repeat(190));
    let stub = Stub::always(Reply::text(200, &body)).await;
    let outcome = order(config(&stub), notes("text")).await;
    let message = error(&outcome);
    assert!(
        message.starts_with("the model API's answer is not JSON: it began yyy"),
        "{message}"
    );
    assert_no_part_of_the_key(message);
    let stub = Stub::always(Reply::text(200, &format!("echo: {KEY}"))).await;
    let outcome = order(config(&stub), notes("text")).await;
    assert_eq!(
        error(&outcome),
        "the model API's answer is not JSON: it began echo: <redacted>"
    );
}

#[tokio::test]
async fn a_5xx_never_quotes_the_key() {
    let body = format!("{} {KEY} and more", "y".repeat(295));
    let stub = Stub::always(Reply::text(500, &body)).await;
    let outcome = order(config(&stub), notes("text")).await;
    let error = error(&outcome);
    assert!(
        error.starts_with("the model API failed (500 Internal Server Error, 4 attempts): yyy"),
        "{error}"
    );
    assert_no_part_of_the_key(error);
}

#[tokio::test]
async fn a_refusal_and_an_answer_that_is_not_json_never_quote_the_key() {
    // The key straddles the 80th character quoted.
    let answer = format!("{} {KEY} and more", "z".repeat(65));
    let stub = Stub::always(Reply::content(&answer)).await;
    let outcome = order(config(&stub), notes("text")).await;
    let message = error(&outcome);
    assert!(
        message.starts_with("the model's answer is not the expected JSON"),
        "{message}"
    );
    assert_no_part_of_the_key(message);

    let refusal = json!({
        "choices": [{ "message": { "content": null, "refusal": format!("{} {KEY}", "x".repeat(290)) } }]
    });
    let stub = Stub::always(Reply::json(200, &refusal)).await;
    let outcome = order(config(&stub), notes("text")).await;
    let message = error(&outcome);
    assert!(
        message.starts_with("the model declined to summarize the file: xxx"),
        "{message}"
    );
    assert_no_part_of_the_key(message);
}

#[tokio::test]
async fn input_errors_are_clear_and_reach_no_api() {
    let stub = Stub::always(Reply::answer(&good_answer())).await;
    let cases = [
        (json!({ "tone": "formal" }), "invalid input: missing field `document`".to_owned()),
        (json!({ "document": null }), "invalid input: missing field `document`".to_owned()),
        (json!({ "document": [] }), "no file was uploaded: upload a text or CSV file to summarize".to_owned()),
        (
            json!({ "document": [FileInput::new("a.txt", "text/plain", b"a"), FileInput::new("b.txt", "text/plain", b"b")] }),
            "2 files were uploaded: upload a single text or CSV file".to_owned(),
        ),
        (
            json!({ "document": [FileInput::new("big.txt", "text/plain", &vec![b'a'; 300 * 1024])] }),
            "`big.txt` is too large: 300 KB, and at most 200 KB of text can be summarized".to_owned(),
        ),
        (
            json!({ "document": [FileInput::new("scan.pdf", "application/pdf", b"%PDF-1.4\n\xff\xfe\x00binary")] }),
            "`scan.pdf` is not UTF-8 text: upload a plain text or CSV file (a PDF or a spreadsheet must be exported as text or CSV first)".to_owned(),
        ),
        (
            json!({ "document": [FileInput::new("blank.txt", "text/plain", b" \n\t\n")] }),
            "`blank.txt` is empty: there is nothing to summarize".to_owned(),
        ),
    ];
    for (inputs, expected) in cases {
        let outcome = order(config(&stub), inputs).await;
        assert_eq!(error(&outcome), expected);
    }
    // A file whose declared size is too large is refused before it is decoded.
    let mut big = serde_json::to_value(FileInput::new("huge.txt", "text/plain", b"tiny")).unwrap();
    big["size_bytes"] = json!(10_000_000);
    let outcome = order(config(&stub), json!({ "document": [big] })).await;
    assert_eq!(
        error(&outcome),
        "`huge.txt` is too large: 9766 KB, and at most 200 KB of text can be summarized"
    );
    assert!(stub.seen().is_empty(), "no request reached the API");
}

#[tokio::test]
async fn an_unknown_tone_names_the_field() {
    let stub = Stub::always(Reply::answer(&good_answer())).await;
    let inputs = json!({ "document": [FileInput::new("a.txt", "text/plain", b"a")], "tone": "sarcastic" });
    let outcome = order(config(&stub), inputs).await;
    let error = error(&outcome);
    assert!(error.contains("tone"), "{error}");
    assert!(
        error.contains("unknown variant `sarcastic`, expected one of `neutral`, `friendly`, `formal`"),
        "{error}"
    );
    assert!(stub.seen().is_empty());
}

#[test]
fn the_configuration_comes_from_the_environment() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let missing = Config::from_lookup(vars(&[("OPENAI_MODEL", "m")]))
        .err()
        .map(|e| e.message().to_owned());
    assert_eq!(
        missing.as_deref(),
        Some(
            "the model API key is not configured: the seller must set OPENAI_API_KEY in the short's environment"
        )
    );
    let blank = Config::from_lookup(vars(&[("OPENAI_API_KEY", "  ")]));
    assert!(blank.is_err());

    let defaults = Config::from_lookup(vars(&[("OPENAI_API_KEY", " sk-x\n")])).unwrap();
    assert_eq!(defaults.api_key, "sk-x");
    assert_eq!(defaults.endpoint(), "https://api.openai.com/v1/chat/completions");
    assert_eq!(defaults.model, "gpt-4o-mini");
    assert_eq!(defaults.timeout, Duration::from_secs(60));

    let set = Config::from_lookup(vars(&[
        ("OPENAI_API_KEY", KEY),
        ("OPENAI_BASE_URL", "http://localhost:11434/v1/"),
        ("OPENAI_MODEL", "llama3.2"),
        ("SUMMARIZE_TIMEOUT_SECS", "120"),
        ("SUMMARIZE_RETRY_BASE_MS", "10"),
        ("SUMMARIZE_DEADLINE_SECS", "90"),
    ]))
    .unwrap();
    assert_eq!(set.endpoint(), "http://localhost:11434/v1/chat/completions");
    assert_eq!(set.model, "llama3.2");
    assert_eq!(set.timeout, Duration::from_secs(120));
    assert_eq!(set.retry_base, Duration::from_millis(10));
    assert_eq!(set.deadline, Duration::from_secs(90));
    assert_eq!(defaults.deadline, Duration::from_secs(240));
    let debug = format!("{set:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");

    let message = |pairs| {
        Config::from_lookup(vars(pairs))
            .err()
            .map(|e| e.message().to_owned())
    };
    assert_eq!(
        message(&[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", "api.openai.com")]).as_deref(),
        Some("OPENAI_BASE_URL is not an http(s) URL such as https://api.openai.com/v1")
    );
    assert_eq!(
        message(&[("OPENAI_API_KEY", "k"), ("SUMMARIZE_TIMEOUT_SECS", "soon")]).as_deref(),
        Some("SUMMARIZE_TIMEOUT_SECS must be a number of seconds")
    );
    assert_eq!(
        message(&[("OPENAI_API_KEY", "k"), ("SUMMARIZE_DEADLINE_SECS", "0")]).as_deref(),
        Some("SUMMARIZE_DEADLINE_SECS must be a number of seconds")
    );
    assert_eq!(
        message(&[("OPENAI_API_KEY", "two words")]).as_deref(),
        Some("OPENAI_API_KEY holds spaces or characters an HTTP header cannot carry")
    );
}
