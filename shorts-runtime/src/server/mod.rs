//! The HTTP side: the webhook routes, their auth, limits and answers.

#[cfg(feature = "acme")]
pub(crate) mod acme;
pub(crate) mod limits;
mod serve;
pub(crate) mod tls;
pub(crate) mod x509;

pub(crate) use serve::{Limits, serve};
pub(crate) use tls::Tls;
pub use tls::{PairError, TlsError};

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use subtle::ConstantTimeEq;
use tracing::{Instrument as _, debug, error, info_span, warn};

use crate::admin::metrics::{MaybeMetrics, Metrics};
use crate::config::Config;
use crate::store::Store as _;
use crate::wire::platform::WEBHOOK_ACK_BODY;
use crate::wire::polling;
use crate::wire::webhook::Webhook;
use crate::worker::{Engine, Held, Job, Lane, Submitted};

/// What the webhook routes serve: the configuration (auth and limits), the shorts' lanes, and
/// the engine that stores and runs their orders.
pub(crate) struct Intake {
    pub(crate) config: Config,
    pub(crate) lanes: Vec<Arc<Lane>>,
    pub(crate) engine: Arc<Engine>,
    /// The App's metrics, when they are on (the admin listener is).
    pub(crate) metrics: MaybeMetrics,
}

#[derive(Clone)]
struct WebhookState {
    intake: Arc<Intake>,
    lane: Arc<Lane>,
}

/// Every short's webhook route behind the auth check, plus `GET /healthz`. With metrics on, every
/// answer of a webhook route is counted (those of the auth check included), and so is every
/// answer to no route.
pub(crate) fn router(intake: &Arc<Intake>) -> Router {
    let mut shorts = Router::new();
    for lane in &intake.lanes {
        let state = WebhookState {
            intake: Arc::clone(intake),
            lane: Arc::clone(lane),
        };
        let status_path = format!("{}/status/{{order_id}}", lane.short.path.trim_end_matches('/'));
        // Every method goes through the auth check first (another method is then answered 405).
        // The webhook route's answers are counted there, its 401s included: no layer of its own.
        let auth = |counted| {
            middleware::from_fn_with_state(
                Auth {
                    intake: Arc::clone(intake),
                    counted,
                },
                authenticate,
            )
        };
        let counted = lane.metrics.is_some().then(|| Arc::clone(lane));
        shorts = shorts
            .route(
                &lane.short.path,
                post(webhook).with_state(state.clone()).layer(auth(counted)),
            )
            .route(&status_path, get(status).with_state(state).layer(auth(None)));
    }
    let router = Router::new().route("/healthz", get(healthz)).merge(shorts);
    match &intake.metrics {
        // A layer on a router without routes wraps its fallback alone, and merging keeps the
        // fallback of the router merged in when neither was set: only requests to no route go
        // through the counting.
        Some(metrics) => router.merge(Router::new().layer(middleware::from_fn_with_state(
            Arc::clone(metrics),
            count_unrouted,
        ))),
        None => router,
    }
}

/// Counts the answers to requests for no route (`404` with `short=""`).
async fn count_unrouted(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    metrics.unrouted().answered(response.status());
    response
}

/// Polling mode: where an order is, with its result once there is one. Same auth as the webhook.
async fn status(State(state): State<WebhookState>, Path(order_id): Path<String>) -> Response {
    match state.intake.engine.store.get(&order_id).await {
        Ok(Some(record)) if *record.short == *state.lane.short.name => {
            json(StatusCode::OK, polling::status(&record).to_string())
        }
        Ok(_) => rejection(StatusCode::NOT_FOUND, "no such order for this short", None),
        Err(e) => {
            error!(error = %e, "could not read an order's status");
            rejection(
                StatusCode::SERVICE_UNAVAILABLE,
                "the order store is unavailable",
                None,
            )
        }
    }
}

async fn healthz() -> Response {
    json(StatusCode::OK, WEBHOOK_ACK_BODY.to_owned())
}

/// Every configured header must be present with exactly the configured value, compared in
/// constant time. A failure stores nothing and runs nothing.
/// With `counted`, the answer (the check's own included) is counted for that short.
async fn authenticate(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let response = if authorized(&auth.intake.config.webhook_auth, request.headers()) {
        next.run(request).await
    } else {
        warn!(
            path = request.uri().path(),
            "webhook refused: missing or wrong auth header"
        );
        rejection(
            StatusCode::UNAUTHORIZED,
            "missing or invalid authentication header",
            None,
        )
    };
    if let Some(metrics) = auth.counted.as_ref().and_then(|lane| lane.metrics.as_ref()) {
        metrics.webhooks.answered(response.status());
    }
    response
}

/// The state of the auth check of a route.
#[derive(Clone)]
struct Auth {
    intake: Arc<Intake>,
    /// The short whose answers are counted on this route, when they are.
    counted: Option<Arc<Lane>>,
}

fn authorized(expected: &[crate::config::WebhookAuth], headers: &HeaderMap) -> bool {
    !expected.is_empty()
        && expected.iter().all(|auth| {
            headers
                .get(&auth.name)
                .is_some_and(|value| digest_matches(value.as_bytes(), &auth.digest))
        })
}

async fn webhook(State(state): State<WebhookState>, request: Request) -> Response {
    let config = &state.intake.config;
    let (parts, body) = request.into_parts();
    if !is_json(&parts.headers) {
        return rejection(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected `Content-Type: application/json`",
            None,
        );
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > config.max_body as u64) {
        return too_large(config.max_body);
    }
    // The body counts against the pending bytes from before it is read, with the copies the store
    // will make of it: on its declared length, or chunk by chunk.
    let pending = &state.intake.engine.pending;
    let copies = state.intake.engine.store.copies();
    let mut held = match declared {
        Some(len) => match pending.try_hold(len.saturating_mul(copies)) {
            Some(held) => held,
            None => return busy(body, config),
        },
        None => Held::none(),
    };
    let read = read_body(body, declared, config, |len| {
        pending.try_grow(&mut held, len.saturating_mul(copies))
    })
    .await;
    let body = match read {
        Ok(body) => body,
        Err(response) => return response,
    };
    let webhook = match Webhook::parse(&body) {
        Ok(webhook) => webhook,
        Err(e) => {
            warn!(path = %e.path, error = %e.message, "webhook refused: not a SellerShorts webhook body");
            return rejection(StatusCode::BAD_REQUEST, &e.message, Some(&e.path));
        }
    };
    // What is logged about the order from here on names it.
    let span = info_span!("order", order_id = %webhook.order_id, short = %state.lane.short.name);
    let id = webhook.order_id.clone();
    let job = Job {
        webhook,
        payload: body,
        held,
    };
    if state.intake.engine.is_stopping() {
        return span.in_scope(stopping);
    }
    // On a task of its own: if the platform hangs up, an order already committed still starts.
    let (engine, lane) = (Arc::clone(&state.intake.engine), Arc::clone(&state.lane));
    let submit = async move { engine.submit(&lane, job).await }.instrument(span.clone());
    let submitted = tokio::spawn(submit).await;
    let _entered = span.enter();
    match submitted {
        Ok(Ok(Submitted::New | Submitted::Duplicate)) => json(StatusCode::OK, WEBHOOK_ACK_BODY.to_owned()),
        Ok(Err(e)) => {
            error!(error = %e, "the order could not be stored; answering 503 so that it is sent again");
            let short = &state.lane.short.name;
            state.intake.engine.alerts.store_failed(Some((&id, short)), &e);
            unstored()
        }
        // The runtime is shutting down (or the task panicked): whether the order was stored is not
        // known, and a duplicate is answered as accepted.
        Err(e) => {
            error!(error = %e, "storing the order was interrupted; answering 503 so that it is sent again");
            unstored()
        }
    }
}

/// The answer to a webhook that arrives after [`App::shutdown`](crate::App::shutdown): nothing is
/// stored, and the platform is asked to send it again (to this instance once it is back, or to
/// another).
fn stopping() -> Response {
    warn!("webhook refused: the server is shutting down");
    let mut response = rejection(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down; try again",
        None,
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(BUSY_RETRY_AFTER));
    response
}

/// The answer to a webhook whose order could not be stored: the platform sends it again.
fn unstored() -> Response {
    rejection(
        StatusCode::SERVICE_UNAVAILABLE,
        "the order could not be stored; try again",
        None,
    )
}

/// Reads the body into one buffer (of the declared length, when there is one), up to
/// `SHORTS_MAX_BODY`, asking `room` before each chunk whether the body may grow to that length.
async fn read_body(
    body: Body,
    declared: Option<u64>,
    config: &crate::config::Config,
    mut room: impl FnMut(u64) -> bool,
) -> Result<bytes::Bytes, Response> {
    let limit = config.max_body;
    let read = async {
        let mut body = body;
        let capacity = declared.map_or(0, |len| usize::try_from(len).unwrap_or(limit).min(limit));
        let mut buffer = bytes::BytesMut::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                debug!(error = %e, "webhook body could not be read");
                rejection(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                    None,
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = buffer.len() + data.len();
            if len > limit {
                return Err(too_large(limit));
            }
            if !room(len as u64) {
                return Err(busy(body, config));
            }
            buffer.extend_from_slice(&data);
        }
        Ok(buffer.freeze())
    };
    match tokio::time::timeout(config.body_read_timeout, read).await {
        Ok(read) => read,
        Err(_) => Err(rejection(
            StatusCode::REQUEST_TIMEOUT,
            "the request body was not received in time",
            None,
        )),
    }
}

/// Seconds the platform is asked to wait before sending a refused webhook again.
const BUSY_RETRY_AFTER: &str = "5";

/// The answer when the bodies held in memory reach `SHORTS_MAX_PENDING_BYTES`: nothing is stored,
/// and the platform is asked to send the webhook again.
///
/// The rest of the body is read and dropped on a task of its own (within `SHORTS_MAX_BODY` and
/// the body timeout): a connection closed while the client is still sending makes its writes fail,
/// and many clients then report a broken pipe instead of the answer.
fn busy(body: Body, config: &crate::config::Config) -> Response {
    warn!("webhook refused: the bodies held in memory reached SHORTS_MAX_PENDING_BYTES");
    let (limit, timeout) = (config.max_body, config.body_read_timeout);
    tokio::spawn(async move {
        let drain = async {
            let mut body = body;
            let mut read = 0;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, bytes::Buf::remaining);
                if read > limit {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, drain).await;
    });
    let mut response = rejection(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is busy with other orders; try again",
        None,
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(BUSY_RETRY_AFTER));
    response
}

fn too_large(limit: usize) -> Response {
    rejection(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is larger than the limit of {limit} bytes (SHORTS_MAX_BODY)"),
        None,
    )
}

/// `application/json`, with or without parameters, or any `application/*+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON error answer: `{"ok": false, "error": "...", "path": "..."}`.
fn rejection(status: StatusCode, message: &str, path: Option<&str>) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("ok".into(), false.into());
    body.insert("error".into(), message.into());
    if let Some(path) = path {
        body.insert("path".into(), path.into());
    }
    json(status, serde_json::Value::Object(body).to_string())
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Whether `given` is `expected`, in time that depends on neither: their SHA-256 digests are
/// compared in constant time, so not even a difference in length ends the comparison early.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    digest_matches(given, &digest(expected))
}

/// Whether the SHA-256 digest of `given` is `expected` (a secret's, see [`digest`]), compared
/// in constant time.
pub(crate) fn digest_matches(given: &[u8], expected: &[u8; 32]) -> bool {
    bool::from(digest(given)[..].ct_eq(&expected[..]))
}

/// The SHA-256 digest of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_secret_compares_whole_values() {
        assert!(super::same_secret(b"a-long-secret-value", b"a-long-secret-value"));
        assert!(!super::same_secret(
            b"a-long-secret-valuE",
            b"a-long-secret-value"
        ));
        assert!(!super::same_secret(b"a-long-secret", b"a-long-secret-value"));
        assert!(!super::same_secret(b"", b"a-long-secret-value"));
    }

    use super::*;
    use crate::config::WebhookAuth;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn every_configured_header_must_match() {
        let auth = [
            WebhookAuth::parse("x-api-key: abc").unwrap_or_else(|e| panic!("{e}")),
            WebhookAuth::parse("Authorization: Bearer t").unwrap_or_else(|e| panic!("{e}")),
        ];
        assert!(authorized(
            &auth,
            &headers(&[("x-api-key", "abc"), ("authorization", "Bearer t")])
        ));
        assert!(!authorized(&auth, &headers(&[("x-api-key", "abc")])));
        assert!(!authorized(
            &auth,
            &headers(&[("x-api-key", "abd"), ("authorization", "Bearer t")])
        ));
        assert!(!authorized(
            &auth,
            &headers(&[("x-api-key", "ab"), ("authorization", "Bearer t")])
        ));
        assert!(!authorized(&[], &headers(&[])));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )])));
        assert!(is_json(&headers(&[("content-type", "application/vnd.api+json")])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[])));
    }
}
