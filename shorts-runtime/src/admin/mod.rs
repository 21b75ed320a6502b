//! The admin listener (`SHORTS_ADMIN_BIND`): `GET /metrics` and the operator's pages, never the
//! webhook routes (and the webhook listener never serves these).
//!
//! Access: with no `SHORTS_ADMIN_TOKEN` (allowed on a loopback address only) every request is let
//! in. With a token, a request needs `Authorization: Bearer <token>`, or the session cookie that
//! the login form sets (`GET /login`, `POST /login`); a browser without either is sent to the form
//! and any other client answered 401. Sessions are random ids kept in memory for
//! [`SESSION_LIFETIME`].
//!
//! State-changing requests (any method but `GET` and `HEAD`, the login form excepted) must carry
//! the session's CSRF token, as the form field `csrf` or the header `x-csrf-token`; without a
//! token configured, the listener's own. Requests with the bearer token are exempt: a browser
//! does not add that header by itself. Pages get the token from the [`Access`] of their request.
//!
//! The listener speaks plain HTTP: it listens on a loopback address unless told otherwise, and
//! is reached through an SSH tunnel or a reverse proxy that terminates TLS. The session cookie is
//! marked `Secure` when the login request arrives with `X-Forwarded-Proto: https`.

pub(crate) mod alerts;
mod dashboard;
pub(crate) mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{
    ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Secret;
use crate::server::Intake;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "shorts_admin";
/// How long a session lasts after the login.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept at once: past it, the one that expires first is dropped.
const MAX_SESSIONS: usize = 1024;
/// The form field that carries the CSRF token.
pub(crate) const CSRF_FIELD: &str = "csrf";
/// The header that may carry the CSRF token instead.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// The largest form body read.
pub(crate) const MAX_FORM: usize = 64 * 1024;
/// The most connections the admin listener keeps open.
const MAX_CONNECTIONS: usize = 64;

/// The admin routes' state: the App they observe, the token and the sessions.
pub(crate) struct Admin {
    intake: Arc<Intake>,
    token: Option<Secret>,
    sessions: Mutex<HashMap<String, Session>>,
    /// The CSRF token of requests when no admin token is set.
    open_csrf: Arc<str>,
}

struct Session {
    csrf: Arc<str>,
    expires: Instant,
}

/// How a request was let in; pages embed [`Access::csrf`] in their forms.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    csrf: Option<Arc<str>>,
    via: Via,
}

/// What let a request in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The bearer token.
    Token,
    /// A session cookie from the login form.
    Session,
    /// Nothing: no admin token is set (the listener is on a loopback address).
    Open,
}

impl Via {
    /// Its name in the audit log: `token`, `session` or `open`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Token => "token",
            Via::Session => "session",
            Via::Open => "open",
        }
    }
}

impl Access {
    /// The CSRF token forms must send back, or `None` for a request with the bearer token (which
    /// needs none).
    pub(crate) fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }

    /// What let the request in.
    pub(crate) fn via(&self) -> Via {
        self.via
    }
}

/// 256 random bits, hex-encoded.
fn random_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether `given` is `expected`, in time that depends on neither (their lengths included).
fn equal(given: &[u8], expected: &[u8]) -> bool {
    crate::server::same_secret(given, expected)
}

impl Admin {
    pub(crate) fn new(intake: &Arc<Intake>) -> Self {
        Self {
            intake: Arc::clone(intake),
            token: intake.config.admin_token.clone(),
            sessions: Mutex::default(),
            open_csrf: random_id().into(),
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How the request may come in, or `None` when it may not.
    fn access(&self, headers: &HeaderMap) -> Option<Access> {
        let Some(token) = &self.token else {
            return Some(Access {
                csrf: Some(Arc::clone(&self.open_csrf)),
                via: Via::Open,
            });
        };
        if let Some(authorization) = headers.get(AUTHORIZATION) {
            let bearer = authorization
                .as_bytes()
                .strip_prefix(b"Bearer ")
                .unwrap_or_default();
            return equal(bearer, token.expose().as_bytes()).then_some(Access {
                csrf: None,
                via: Via::Token,
            });
        }
        let id = session_cookie(headers)?;
        let sessions = self.sessions();
        let session = sessions.get(id).filter(|s| s.expires > Instant::now())?;
        Some(Access {
            csrf: Some(Arc::clone(&session.csrf)),
            via: Via::Session,
        })
    }

    /// A new session; its id.
    fn open_session(&self) -> String {
        let id = random_id();
        let now = Instant::now();
        let mut sessions = self.sessions();
        sessions.retain(|_, session| session.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(first) = sessions
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&first);
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_id().into(),
                expires: now + SESSION_LIFETIME,
            },
        );
        id
    }
}

/// The value of the session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// The admin routes: `/login` open, the rest behind [`guard`].
pub(crate) fn router(admin: &Arc<Admin>) -> Router {
    let guarded = dashboard::routes(Router::new())
        .route("/metrics", get(metrics))
        .route("/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(Arc::clone(admin), guard));
    Router::new()
        .route("/login", get(login_form).post(login))
        .merge(guarded)
        .with_state(Arc::clone(admin))
}

/// Serves the admin routes on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    router: Router,
    listener: TcpListener,
    config: &crate::config::Config,
    shutdown: impl Future<Output = ()>,
) {
    if let Ok(addr) = listener.local_addr() {
        let auth = if config.admin_token.is_some() {
            "token"
        } else {
            "none (loopback)"
        };
        info!(%addr, auth, "admin listener: the dashboard at /, GET /metrics");
    }
    let limits = crate::server::Limits {
        listener: "admin",
        max_connections: MAX_CONNECTIONS,
        ..crate::server::Limits::from_config(config)
    };
    let plain = crate::server::tls::Acceptor::default();
    crate::server::serve(listener, plain, router, limits, shutdown).await;
}

/// Lets in a request with access, checking the CSRF token of a state-changing one; refuses the
/// others.
async fn guard(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    let Some(access) = admin.access(request.headers()) else {
        return refuse(request.headers());
    };
    // Without a token the listener is on loopback, and must answer only requests made for a
    // loopback name: a web page whose own name the attacker points at 127.0.0.1 (DNS rebinding)
    // would otherwise read the pages and act with their CSRF token.
    if matches!(access.via, Via::Open) && !loopback_host(request.headers()) {
        warn!(
            path = request.uri().path(),
            "admin request refused: not addressed to localhost, 127.0.0.1 or [::1]"
        );
        return text(
            StatusCode::FORBIDDEN,
            "without SHORTS_ADMIN_TOKEN the admin listener answers only requests for localhost, 127.0.0.1 or [::1]",
        );
    }
    let mut request = request;
    if !matches!(*request.method(), Method::GET | Method::HEAD)
        && let Some(expected) = access.csrf.clone()
    {
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MAX_FORM).await else {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
        };
        let header = parts.headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
        let field = form_field(&body, CSRF_FIELD);
        let given = header.or(field.as_deref().map(str::as_bytes)).unwrap_or_default();
        if !equal(given, expected.as_bytes()) {
            warn!(
                path = parts.uri.path(),
                "admin request refused: missing or wrong CSRF token"
            );
            return text(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
        }
        request = Request::from_parts(parts, Body::from(body));
    }
    request.extensions_mut().insert(access);
    next.run(request).await
}

/// Whether the request names a loopback host (`localhost`, `127.0.0.1` or `[::1]`, with any
/// port), or names none.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next() == Some("::1"),
        None => {
            let name = host.split(':').next().unwrap_or(host);
            name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1"
        }
    }
}

/// A browser (it accepts HTML) is sent to the login form; another client is answered 401.
fn refuse(headers: &HeaderMap) -> Response {
    let browser = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    if browser {
        return redirect("/login");
    }
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token: send `Authorization: Bearer <SHORTS_ADMIN_TOKEN>`",
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"shorts admin\""),
    );
    response
}

/// The value of `name` in a `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

pub(crate) fn text(status: StatusCode, message: &str) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn redirect(to: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    response
}

/// An HTML document as an answer of the admin listener: never cached, never framed, and nothing
/// loaded from elsewhere (the content security policy allows inline styles only; inline SVG
/// needs no source).
pub(crate) fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

async fn login_form(State(admin): State<Arc<Admin>>) -> Response {
    if admin.token.is_none() {
        return redirect("/");
    }
    dashboard::login_page(StatusCode::OK, false)
}

async fn login(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    let Some(token) = &admin.token else {
        return redirect("/");
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_FORM).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
    };
    let given = form_field(&body, "token").unwrap_or_default();
    if !equal(given.as_bytes(), token.expose().as_bytes()) {
        warn!("admin login refused: wrong token");
        return dashboard::login_page(StatusCode::UNAUTHORIZED, true);
    }
    let id = admin.open_session();
    let secure = parts
        .headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = redirect("/");
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    info!("admin login");
    response
}

async fn logout(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    if let Some(id) = session_cookie(request.headers()) {
        admin.sessions().remove(id);
    }
    let mut response = redirect(if admin.token.is_some() { "/login" } else { "/" });
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("shorts_admin=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let Some(metrics) = &admin.intake.metrics else {
        return text(StatusCode::NOT_FOUND, "metrics are off (SHORTS_ADMIN_BIND=off)");
    };
    match metrics.encode(&admin.intake.engine.store).await {
        Ok(body) => {
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be written",
        ),
    }
}
