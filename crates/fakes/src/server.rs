//! What both fakes' servers share: one lifecycle (a cancellation token and a
//! tracker of every task, with a bounded shutdown), the accept loop with its
//! connection cap, the HTTP control port, and waiting on a "counters changed" watch.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time `shutdown()` waits for every task of a fake to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections a fake serves at once; further connects wait in the listen backlog.
const MAX_CONNECTIONS: usize = 10_000;
/// Pause after a failed `accept` (usually EMFILE) rather than spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The lifecycle of one fake: cancelled once, every task tracked.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lifecycle {
    /// Cancelled by `shutdown()`; every task of the fake watches it.
    pub(crate) cancel: CancellationToken,
    /// Every task of the fake, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
}

impl Lifecycle {
    /// Cancels every task and waits, at most [`SHUTDOWN_GRACE`], for them to end.
    pub(crate) async fn shutdown(&self, name: &str) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait()).await.is_err() {
            tracing::warn!("{name} tasks still running after the shutdown grace period");
        }
    }
}

/// Where an accept loop gets its connections from.
pub(crate) trait Accept: Send + 'static {
    /// The next accepted connection (or the error `accept` returned).
    fn accept(&mut self) -> impl Future<Output = std::io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _peer)| stream)
    }
}

/// Accepts connections until the fake shuts down, at most [`MAX_CONNECTIONS`] at
/// once, and serves each on a tracked task of its own.
pub(crate) async fn accept_loop<A, S, F>(life: Lifecycle, name: &'static str, mut from: A, serve: S)
where
    A: Accept,
    S: Fn(TcpStream, OwnedSemaphorePermit) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = life.cancel.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = life.cancel.cancelled() => return,
            accepted = from.accept() => accepted,
        };
        match accepted {
            Ok(stream) => {
                life.tracker.spawn(serve(stream, permit));
            }
            Err(err) => {
                tracing::warn!(%err, "{name} accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Binds `listen` and serves `app` on it until the fake shuts down; returns the
/// bound address.
pub(crate) async fn serve_control(
    life: &Lifecycle,
    name: &'static str,
    listen: SocketAddr,
    app: axum::Router,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let stop = life.cancel.clone().cancelled_owned();
    life.tracker.spawn(async move {
        if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::warn!(%err, "{name} control port failed");
        }
    });
    Ok(addr)
}

/// Waits until `check` holds, re-checking after every change published on
/// `changes` (no polling); `false` on timeout or when the fake is gone.
pub(crate) async fn wait_changes(
    mut changes: watch::Receiver<u64>,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> bool {
    let wait = async {
        loop {
            if check() {
                return true;
            }
            if changes.changed().await.is_err() {
                return false;
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or(false)
}
