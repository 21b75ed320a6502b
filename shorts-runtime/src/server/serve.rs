//! The accept loop: hyper's HTTP/1 server with a header-read timeout, and graceful shutdown.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::tls::Acceptor;

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections finish
/// their current request for up to `grace`. Each connection goes through `acceptor` first (the
/// TLS handshake, when serving HTTPS), within the header-read timeout.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: Acceptor,
    router: Router,
    header_read_timeout: Duration,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let service = TowerToHyperService::new(router.clone());
                    let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
                    tokio::spawn(async move {
                        let stream = match acceptor.accept(stream, header_read_timeout).await {
                            Ok(Some(stream)) => stream,
                            Ok(None) => return,
                            Err(e) => return debug!(%peer, error = %e, "TLS handshake failed"),
                        };
                        let connection = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                        if let Err(e) = connection.await {
                            debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        warn!("open connections did not finish within the grace period");
    }
}
