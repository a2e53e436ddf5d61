//! The process's drain signal, watched by every session without a lock per wake-up.
//!
//! A session's `select!` polls each of its branches every time the task wakes, which
//! is every audio frame. A `CancellationToken`'s `cancelled()` future takes the
//! token's mutex and its `Notify`'s mutex on each of those polls, and the drain token
//! is one for the whole process: two shared locks per frame, from every session.
//! [`Watch`] registers the task's waker with the token once; after that a poll is
//! one atomic load of the `started` flag, which [`Drain::start`] sets before it
//! cancels the token. It goes back to the token only if it is polled with another
//! waker (a tokio task's waker does not change, so in a session that never happens).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Started once, when the process begins draining.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    started: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Drain {
    /// A drain that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the drain: every [`Watch`] completes. Idempotent.
    pub fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the drain has started.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// A future that completes when the drain starts; meant to be created once per
    /// session and polled from its `select!` on every turn.
    pub fn watch(&self) -> Watch {
        Watch {
            started: self.started.clone(),
            cancelled: Box::pin(self.token.clone().cancelled_owned()),
            registered: None,
        }
    }
}

/// See [`Drain::watch`].
pub struct Watch {
    started: Arc<AtomicBool>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker the token will wake; `None` until the first poll.
    registered: Option<Waker>,
}

impl Future for Watch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.started.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self.registered.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            // The token already holds this waker: `start` sets the flag before it
            // wakes us, so the load above sees it on the poll that follows.
            return Poll::Pending;
        }
        match self.cancelled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                self.registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("started", &self.started).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counting>, Waker) {
        let count = Arc::new(Counting::default());
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn start_wakes_the_registered_task_and_completes_the_watch() {
        let drain = Drain::new();
        let mut watch = drain.watch();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1_000 {
            assert!(Pin::new(&mut watch).poll(&mut cx).is_pending());
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert!(!drain.is_started());
        drain.start();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the token woke the task once");
        assert!(drain.is_started());
        assert!(Pin::new(&mut watch).poll(&mut cx).is_ready());
        // A watch made after the start is ready at once; starting again is harmless.
        drain.start();
        assert!(Pin::new(&mut drain.watch()).poll(&mut cx).is_ready());
    }

    #[test]
    fn a_new_waker_is_registered_with_the_token() {
        let drain = Drain::new();
        let mut watch = drain.watch();
        let (first, first_waker) = counting();
        let (second, second_waker) = counting();
        assert!(Pin::new(&mut watch).poll(&mut Context::from_waker(&first_waker)).is_pending());
        assert!(Pin::new(&mut watch).poll(&mut Context::from_waker(&second_waker)).is_pending());
        drain.start();
        assert_eq!(second.0.load(Ordering::SeqCst), 1, "the last waker polled is woken");
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_loop_sees_the_drain() {
        let drain = Drain::new();
        let watcher = {
            let drain = drain.clone();
            tokio::spawn(async move {
                let mut watch = drain.watch();
                let mut ticks = tokio::time::interval(std::time::Duration::from_millis(1));
                let mut turns = 0u32;
                loop {
                    tokio::select! {
                        () = &mut watch => return turns,
                        _ = ticks.tick() => turns += 1,
                    }
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drain.start();
        let turns = tokio::time::timeout(std::time::Duration::from_secs(5), watcher)
            .await
            .expect("the loop ended")
            .unwrap();
        assert!(turns > 1, "the watch was polled on many turns before the drain");
    }
}
