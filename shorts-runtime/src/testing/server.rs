//! The mock platform's HTTP side.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::{
    Attempt, CALLBACK_PATH, Callback, Endpoint, Fault, PREPARE_PATH, STORAGE_PREFIX, Slot, State,
    StoredObject, lock,
};
use crate::wire::platform::CALLBACK_SECRET_HEADER;

#[derive(Clone)]
pub(super) struct Server {
    pub(super) state: Arc<State>,
    pub(super) secret: Arc<str>,
    pub(super) addr: SocketAddr,
    pub(super) body_limit: usize,
    pub(super) max_bytes: u64,
    pub(super) expires_in: Duration,
    pub(super) save_to: Option<Arc<Path>>,
    pub(super) flaky: f64,
    /// `http` or `https`, for the upload URLs it hands out.
    pub(super) scheme: &'static str,
}

/// Time a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTPS with a PEM certificate chain and key.
pub(super) fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> std::io::Result<TlsAcceptor> {
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the mock platform's certificate cannot be used: {e}"),
        )
    };
    let key = crate::server::tls::certified_key(cert_pem, key_pem).map_err(|e| invalid(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::server::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Returned to hyper to close a connection without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a scripted fault")
    }
}

impl std::error::Error for Dropped {}

type Answer = Result<Response<Full<Bytes>>, Dropped>;

/// What one call is answered, before it is recorded.
struct Reply {
    status: u16,
    body: Value,
    /// The request body, for the attempt log.
    seen: Bytes,
}

impl Reply {
    fn error(status: u16, message: &str) -> Self {
        Self {
            status,
            body: json!({ "ok": false, "error": message }),
            seen: Bytes::new(),
        }
    }

    fn ok(body: Value, seen: Bytes) -> Self {
        Self {
            status: 200,
            body,
            seen,
        }
    }
}

impl Server {
    pub(super) async fn run(self, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let server = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => server.connection(stream).await,
                    Some(tls) => {
                        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream));
                        if let Ok(Ok(stream)) = handshake.await {
                            server.connection(stream).await;
                        }
                    }
                }
            });
        }
    }

    async fn connection(self, stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) {
        let service = service_fn(move |request| {
            let server = self.clone();
            async move { server.handle(request).await }
        });
        // A dropped connection surfaces here as an error; that is the point.
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }

    async fn handle(&self, request: Request<Incoming>) -> Answer {
        let path = request.uri().path().to_owned();
        let endpoint = match (request.method(), path.as_str()) {
            (&Method::POST, CALLBACK_PATH) => Endpoint::Callback,
            (&Method::POST, PREPARE_PATH) => Endpoint::Prepare,
            (&Method::PUT, p) if p.starts_with(STORAGE_PREFIX) => Endpoint::Storage,
            _ => return Ok(respond(404, &json!({"ok": false, "error": "not found"}))),
        };
        let secret = request
            .headers()
            .get(CALLBACK_SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let scripted = lock(&self.state.faults)
            .get_mut(&endpoint)
            .and_then(|queue| queue.pop_front());
        let fault = scripted.or_else(|| {
            let flaky = endpoint == Endpoint::Callback && fastrand::f64() < self.flaky;
            flaky.then(|| {
                if fastrand::bool() {
                    Fault::Status(503)
                } else {
                    Fault::Drop
                }
            })
        });
        let reply = match fault {
            Some(Fault::Status(status)) => Reply::error(status, "scripted fault"),
            Some(Fault::Drop) => {
                self.record(endpoint, None, secret, Bytes::new());
                return Err(Dropped);
            }
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                self.serve(endpoint, &path, secret.as_deref(), request).await
            }
            None => self.serve(endpoint, &path, secret.as_deref(), request).await,
        };
        self.record(endpoint, Some(reply.status), secret, reply.seen);
        Ok(respond(reply.status, &reply.body))
    }

    async fn serve(
        &self,
        endpoint: Endpoint,
        path: &str,
        secret: Option<&str>,
        request: Request<Incoming>,
    ) -> Reply {
        match endpoint {
            Endpoint::Callback | Endpoint::Prepare => {
                if secret != Some(&*self.secret) {
                    return Reply::error(401, "missing or invalid x-callback-secret");
                }
                let json = header(request.headers(), CONTENT_TYPE)
                    .is_some_and(|v| v.starts_with("application/json"));
                if !json {
                    return Reply::error(415, "expected application/json");
                }
                let body = match Limited::new(request.into_body(), self.body_limit).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(_) => return Reply::error(413, "body exceeds the size limit"),
                };
                let reply = match serde_json::from_slice::<Value>(&body) {
                    Ok(parsed) if endpoint == Endpoint::Callback => self.callback(parsed, body.len()),
                    Ok(parsed) => self.prepare(&parsed),
                    Err(_) => Reply::error(400, "invalid JSON"),
                };
                Reply { seen: body, ..reply }
            }
            Endpoint::Storage => self.storage(&path[STORAGE_PREFIX.len()..], request).await,
        }
    }

    fn callback(&self, body: Value, size: usize) -> Reply {
        let order_id = match (&body["ok"], body["order_id"].as_str()) {
            (Value::Bool(_), Some(id)) if !id.is_empty() => id.to_owned(),
            _ => return Reply::error(400, "invalid payload: `ok` and `order_id` are required"),
        };
        if let Some(files) = body["files"].as_array() {
            let objects = lock(&self.state.objects);
            for key in files.iter().filter_map(|f| f.get("object_key")) {
                if !objects
                    .iter()
                    .any(|o| Some(o.object_key.as_str()) == key.as_str())
                {
                    return Reply::error(400, &format!("unknown object_key {key}"));
                }
            }
        }
        let duplicate = !lock(&self.state.completed).insert(order_id);
        let callback = Callback {
            body,
            duplicate,
            size,
            received_at: std::time::Instant::now(),
        };
        lock(&self.state.callbacks).push(callback.clone());
        // No subscriber is fine.
        let _ = self.state.accepted.send(callback);
        Reply::ok(json!({"ok": true}), Bytes::new())
    }

    fn prepare(&self, request: &Value) -> Reply {
        let (Some(order_id), Some(filename), Some(mime_type), Some(_size)) = (
            request["order_id"].as_str(),
            request["filename"].as_str(),
            request["mime_type"].as_str(),
            request["file_size"].as_u64(),
        ) else {
            return Reply::error(
                400,
                "`order_id`, `filename`, `mime_type` and `file_size` are required",
            );
        };
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let stored_name = format!("20241109-{}-{filename}", &token[..6]);
        let object_key = format!("orders/{order_id}/{stored_name}");
        let expired = {
            let mut expire_next = lock(&self.state.expire_next);
            let expired = *expire_next > 0;
            *expire_next = expire_next.saturating_sub(1);
            expired
        };
        let expires_in = if expired { Duration::ZERO } else { self.expires_in };
        lock(&self.state.slots).insert(
            token.clone(),
            Slot {
                object_key: object_key.clone(),
                mime_type: mime_type.to_owned(),
                expires_at: Instant::now() + expires_in,
            },
        );
        Reply::ok(
            json!({
                "ok": true,
                "order_id": order_id,
                "is_test_mode": false,
                "filename": stored_name,
                "object_key": object_key,
                // As long as a real presigned URL, whose query carries the signature.
                "upload_url": format!(
                    "{}://{}{STORAGE_PREFIX}{token}?X-Amz-Expires={}&X-Amz-Signature={}",
                    self.scheme,
                    self.addr,
                    expires_in.as_secs(),
                    "5e".repeat(600)
                ),
                "requires_headers": { "Content-Type": mime_type },
                "expires_in": expires_in.as_secs(),
                "max_bytes": self.max_bytes,
            }),
            Bytes::new(),
        )
    }

    /// A signed PUT, checked as S3 checks one.
    async fn storage(&self, token: &str, request: Request<Incoming>) -> Reply {
        let started = Instant::now();
        let (object_key, mime_type) = {
            let slots = lock(&self.state.slots);
            let Some(slot) = slots.get(token) else {
                return Reply::error(404, "NoSuchUpload");
            };
            if Instant::now() >= slot.expires_at {
                return Reply::error(403, "AccessDenied: Request has expired");
            }
            (slot.object_key.clone(), slot.mime_type.clone())
        };
        let headers = request.headers();
        if header(headers, CONTENT_TYPE) != Some(mime_type.as_str()) {
            return Reply::error(
                403,
                "SignatureDoesNotMatch: Content-Type differs from the signed one",
            );
        }
        if headers.contains_key(TRANSFER_ENCODING) {
            return Reply::error(501, "NotImplemented: Transfer-Encoding is not supported");
        }
        let Some(length) = header(headers, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()) else {
            return Reply::error(411, "MissingContentLength");
        };
        if length > self.max_bytes {
            return Reply::error(413, "EntityTooLarge");
        }
        let mut file = match &self.save_to {
            Some(dir) => {
                let path = dir.join(object_key.replace('/', "_"));
                match tokio::fs::File::create(&path).await {
                    Ok(file) => Some((file, path)),
                    Err(_) => return Reply::error(500, "could not save the object"),
                }
            }
            None => None,
        };
        let mut body = request.into_body();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Reply::error(400, "IncompleteBody");
            };
            if let Ok(data) = frame.into_data() {
                size += data.len() as u64;
                hasher.update(&data);
                if let Some((file, _)) = &mut file
                    && file.write_all(&data).await.is_err()
                {
                    return Reply::error(500, "could not save the object");
                }
            }
        }
        if size != length {
            return Reply::error(400, "IncompleteBody");
        }
        if let Some((file, _)) = &mut file
            && file.flush().await.is_err()
        {
            return Reply::error(500, "could not save the object");
        }
        let object = StoredObject {
            object_key,
            size,
            sha256: hex(&hasher.finalize()),
            content_type: mime_type,
            path: file.map(|(_, path)| path),
            elapsed: started.elapsed(),
        };
        let mut objects = lock(&self.state.objects);
        objects.retain(|o| o.object_key != object.object_key);
        objects.push(object);
        Reply::ok(Value::Null, Bytes::new())
    }

    fn record(&self, endpoint: Endpoint, status: Option<u16>, secret: Option<String>, body: Bytes) {
        lock(&self.state.attempts).push(Attempt {
            endpoint,
            status,
            secret,
            body,
        });
        self.state.changed.notify_waiters();
    }
}

fn header(headers: &HeaderMap, name: http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn respond(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}
