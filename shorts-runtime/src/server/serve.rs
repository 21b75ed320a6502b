//! The accept loop: hyper's HTTP/1 server under the connection limits, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use super::limits::{self, Admitted, Connections, Expiry, Spare, Tally, Timeouts, Watched};
use super::tls::Acceptor;

/// Descriptors the server needs besides its connections (store, callbacks, the shorts' files):
/// fewer than this left under the open-file limit earns a warning at start.
const OTHER_DESCRIPTORS: u64 = 32;

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Which listener these are, in the log: `webhooks` or `admin`.
    pub(crate) listener: &'static str,
    /// The most connections open at once.
    pub(crate) max_connections: usize,
    /// The header and idle timeouts.
    pub(crate) timeouts: Timeouts,
    /// How long open connections may take to finish on shutdown.
    pub(crate) grace: Duration,
}

impl Limits {
    /// The limits `config` asks for; the connection cap defaults to a share of the open-file
    /// limit in force now.
    pub(crate) fn from_config(config: &crate::config::Config) -> Self {
        Self {
            listener: "webhooks",
            max_connections: config
                .max_connections
                .unwrap_or_else(|| limits::default_max_connections(limits::open_file_limit())),
            timeouts: Timeouts {
                header: config.header_read_timeout,
                idle: config.idle_timeout,
            },
            grace: config.shutdown_grace,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections finish
/// their current request for up to `limits.grace`. Each connection goes through `acceptor` first
/// (the TLS handshake, when serving HTTPS), on the connection's header-timeout clock.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: Acceptor,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let open_files = limits::open_file_limit();
    info!(
        listener = limits.listener,
        max_connections = limits.max_connections,
        open_file_limit = open_files,
        idle_timeout = %crate::logs::duration(limits.timeouts.idle),
        "connection limits"
    );
    if let Some(open_files) = open_files
        && (limits.max_connections as u64).saturating_add(OTHER_DESCRIPTORS) > open_files
    {
        warn!(
            max_connections = limits.max_connections,
            open_file_limit = open_files,
            "SHORTS_MAX_CONNECTIONS leaves fewer than {OTHER_DESCRIPTORS} file descriptors for the store and callbacks; accepts may fail below the cap"
        );
    }
    let mut builder = http1::Builder::new();
    // The header timeout is the connection clock's (`limits.rs`): hyper's would also end idle
    // keep-alive connections after it.
    builder.header_read_timeout(None);
    let tally = Arc::new(Tally::default());
    let connections = Connections::new(limits.max_connections, limits.timeouts, Arc::clone(&tally));
    let reporter =
        tokio::spawn(Arc::clone(&tally).report_every(Duration::from_secs(1), limits.max_connections));
    let (stop, stopping) = watch::channel(());
    let mut spare = Spare::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Past the cap (every connection busy), dropping the stream closes it at once.
                    if let Some(admitted) = connections.admit() {
                        tokio::spawn(connection(
                            stream,
                            peer,
                            Handler {
                                acceptor: acceptor.clone(),
                                router: router.clone(),
                                builder: builder.clone(),
                                handshake_timeout: limits.timeouts.header,
                            },
                            admitted,
                            stopping.clone(),
                        ));
                        // Descriptors stay within the cap: a connection that made room closes
                        // before the next is accepted.
                        connections.settle().await;
                    }
                }
                Err(e) => {
                    tally.accept_failed(&e);
                    // Out of file descriptors and the like: close the waiting connection with the
                    // spare descriptor, or back off instead of spinning.
                    if !spare.shed(&listener) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(());
    if tokio::time::timeout(limits.grace, stop.closed()).await.is_err() {
        warn!("open connections did not finish within the grace period");
    }
    reporter.abort();
    tally.report(limits.max_connections);
}

/// What serves each connection.
struct Handler {
    acceptor: Acceptor,
    router: Router,
    builder: http1::Builder,
    /// A backstop for the handshake; the connection's clock ends it first.
    handshake_timeout: Duration,
}

/// Serves one connection until it ends, its clock expires or the server stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Handler,
    admitted: Admitted,
    mut stopping: watch::Receiver<()>,
) {
    let Handler {
        acceptor,
        router,
        builder,
        handshake_timeout,
    } = handler;
    // The handshake runs on the connection's clock: no request can begin before it ends, so a
    // handshake that never finishes is closed by the header timeout, and an idle one can be
    // evicted like any idle connection.
    let stream = tokio::select! {
        accepted = acceptor.accept(stream, handshake_timeout) => match accepted {
            Ok(Some(stream)) => stream,
            Ok(None) => return,
            Err(e) => return debug!(%peer, error = %e, "TLS handshake failed"),
        },
        expiry = admitted.expired() => {
            if matches!(expiry, Expiry::HeadersLate) {
                admitted.tally().headers_late.add();
            }
            return;
        }
    };
    let conn = Arc::clone(admitted.conn());
    let service = service_fn(move |request| {
        let in_flight = conn.begin();
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(in_flight);
            response
        }
    });
    let io = TokioIo::new(Watched::new(stream, Arc::clone(admitted.conn())));
    let mut served = std::pin::pin!(builder.serve_connection(io, service));
    let (mut stopped, mut closing) = (false, false);
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stopping.changed(), if !stopped => {
                let _ = changed;
                stopped = true;
                served.as_mut().graceful_shutdown();
            }
            expiry = admitted.expired() => match expiry {
                // Closed between requests, or once the response being written has gone out; a
                // client that does not read it gets one more idle period.
                Expiry::Idle if !closing => {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                    admitted.conn().restart();
                }
                Expiry::Idle | Expiry::Evicted => return,
                Expiry::HeadersLate => {
                    admitted.tally().headers_late.add();
                    return;
                }
            },
        }
    }
}
