//! A stand-in for an OpenAI-compatible API on 127.0.0.1: it answers `POST /v1/chat/completions`
//! from a script, then with a fallback answer, and records every request.
#![allow(dead_code, reason = "each test file uses a part of it")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// A fake key, easy to search for in every output.
pub(crate) const KEY: &str = "sk-test-FAKEKEY-0123456789abcdef";

/// Panics when `text` holds any 8 characters of [`KEY`] in a row: a key cut short leaks too.
pub(crate) fn assert_no_part_of_the_key(text: &str) {
    for part in KEY.as_bytes().windows(8) {
        let part = std::str::from_utf8(part).expect("the key is ASCII");
        assert!(!text.contains(part), "`{part}` of the key is in: {text}");
    }
}
/// The model the tests ask for.
pub(crate) const MODEL: &str = "stub-model-1";

/// One scripted answer.
#[derive(Clone)]
pub(crate) enum Reply {
    /// This status, body and headers.
    Raw {
        status: u16,
        body: String,
        headers: Vec<(&'static str, String)>,
    },
    /// Wait, then answer.
    Slow(Duration, Box<Reply>),
}

impl Reply {
    /// A successful chat completion whose message is `content`.
    pub(crate) fn content(content: &str) -> Self {
        let body = json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": MODEL,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": content },
                "finish_reason": "stop",
            }],
        });
        Self::json(200, &body)
    }

    /// A successful completion whose content is this JSON.
    pub(crate) fn answer(answer: &Value) -> Self {
        Self::content(&answer.to_string())
    }

    /// `status` with a JSON body.
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Self::Raw {
            status,
            body: body.to_string(),
            headers: vec![("content-type", "application/json".to_owned())],
        }
    }

    /// `status` with OpenAI's error shape.
    pub(crate) fn error(status: u16, message: &str) -> Self {
        Self::json(
            status,
            &json!({ "error": { "message": message, "type": "invalid_request_error", "code": null } }),
        )
    }

    /// 429, with `Retry-After` when given.
    pub(crate) fn rate_limited(retry_after: Option<u64>) -> Self {
        let mut reply = Self::error(429, "Rate limit reached for requests");
        if let (Self::Raw { headers, .. }, Some(secs)) = (&mut reply, retry_after) {
            headers.push(("retry-after", secs.to_string()));
        }
        reply
    }

    /// `status` with a plain-text body.
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Self::Raw {
            status,
            body: body.to_owned(),
            headers: vec![("content-type", "text/plain".to_owned())],
        }
    }

    /// This answer with one more header.
    pub(crate) fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Self::Raw { headers, .. } = &mut self {
            headers.push((name, value.to_owned()));
        }
        self
    }

    /// This answer after `delay`.
    pub(crate) fn slow(delay: Duration, reply: Self) -> Self {
        Self::Slow(delay, Box::new(reply))
    }
}

/// A request the stub received.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// The `Authorization` header.
    pub(crate) authorization: Option<String>,
    /// The JSON body (`Null` when it was not JSON).
    pub(crate) body: Value,
    /// When it arrived.
    pub(crate) at: Instant,
}

struct Script {
    next: VecDeque<Reply>,
    then: Reply,
    seen: Vec<Seen>,
}

/// The running stub.
pub(crate) struct Stub {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Stub {
    /// Answers `script` in order, then `then` to every further request.
    pub(crate) async fn start(script: Vec<Reply>, then: Reply) -> Self {
        let script = Arc::new(Mutex::new(Script {
            next: script.into(),
            then,
            seen: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the stub binds 127.0.0.1");
        let addr = listener.local_addr().expect("the stub has an address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, script }
    }

    /// Always answers `reply`.
    pub(crate) async fn always(reply: Reply) -> Self {
        Self::start(Vec::new(), reply).await
    }

    /// The base URL to configure (`OPENAI_BASE_URL`).
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.script.lock().expect("the stub's lock").seen.clone()
    }
}

async fn chat(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let mut script = script.lock().expect("the stub's lock");
        script.seen.push(Seen {
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
        });
        let then = script.then.clone();
        script.next.pop_front().unwrap_or(then)
    };
    let mut reply = reply;
    loop {
        match reply {
            Reply::Slow(delay, inner) => {
                tokio::time::sleep(delay).await;
                reply = *inner;
            }
            Reply::Raw {
                status,
                body,
                headers,
            } => {
                let status = StatusCode::from_u16(status).expect("a valid status");
                let mut map = HeaderMap::new();
                for (name, value) in headers {
                    map.insert(name, value.parse().expect("a valid header value"));
                }
                return (status, map, body).into_response();
            }
        }
    }
}
