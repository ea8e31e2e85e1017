//! The HTTP listener's accept loop: every connection is admitted by a [`Gate`] (a cap
//! in total and per source, the oldest silent socket giving way to a newcomer), must
//! send its request head within the header timeout (which also closes idle keep-alive
//! connections), and learns its peer address for per-source limits.
//!
//! `axum::serve` does neither, which let 20,000 sockets that never sent a request hold
//! every file descriptor of the hub.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::limits::{Gate, Ticket};
use crate::metrics::Metrics;

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    gate: Arc<Gate>,
    header_timeout: Duration,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match gate.admit_pending(peer.ip()) {
            Ok((ticket, evicted)) => {
                let conn = Conn {
                    stream,
                    peer,
                    app: app.clone(),
                    ticket: Arc::new(ticket),
                    header_timeout,
                    metrics: metrics.clone(),
                };
                tokio::spawn(conn.run(evicted, stop_rx.clone()));
            }
            Err(refusal) => {
                metrics.refuse_connection("http", refusal.label());
                debug!(%peer, reason = refusal.label(), "HTTP connection refused");
            }
        }
    }
    drop(stop_rx);
    stop_tx.send_replace(());
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, stop_tx.closed()).await;
    Ok(())
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    ticket: Arc<Ticket>,
    header_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Conn {
    async fn run(self, evicted: tokio::sync::oneshot::Receiver<()>, mut stop: watch::Receiver<()>) {
        let Conn {
            stream,
            peer,
            app,
            ticket,
            header_timeout,
            metrics,
        } = self;
        let _ = stream.set_nodelay(true);
        let held = ticket.clone();
        let service =
            tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                // A request proves the socket is in use: it is no longer the first to give way.
                held.promote();
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        // A promoted ticket drops its sender: that is no eviction.
        let mut evicted = std::pin::pin!(async move {
            if evicted.await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        let mut stopping = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "HTTP connection ended");
                    }
                    break;
                }
                () = &mut evicted => {
                    metrics.refuse_connection("http", "evicted");
                    debug!(%peer, "silent HTTP connection closed to make room");
                    break;
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        drop(ticket);
    }
}
