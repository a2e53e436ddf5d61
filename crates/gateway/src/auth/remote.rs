//! The JWKS URL as a live source of keys: fetched at start, cached per its
//! `Cache-Control`, refreshed in the background before it expires, and re-fetched
//! on demand (at most once per `unknown_kid_interval`) when a token names a `kid`
//! the cached set does not have — so a key rotation at the identity provider needs
//! no restart.
//!
//! One task (`refresh_loop`) does every fetch, so fetches never overlap: a hundred
//! upgrades that see the same new `kid` cause one request and all wait for it. A
//! failed fetch (down, timeout, bad JSON, an empty set) keeps the last good keys,
//! and is logged and counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hark_resilience::backoff::Backoff;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::jwks::{self, KeySet};
use super::JwksFetchPolicy;
use crate::metrics::{JWKS_AGE, JWKS_FETCHES, JWKS_KEYS};

/// How often the key set's age is published while nothing else happens.
const AGE_EVERY: Duration = Duration::from_secs(5);
/// Delays between the attempts of the first fetch at start.
const STARTUP_PAUSE: Duration = Duration::from_secs(1);

/// What one GET returned.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// 304: the cached set is still current.
    NotModified(CacheHeaders),
    /// A new document.
    Modified {
        /// The document.
        body: Bytes,
        /// Its `ETag`, for the next conditional request.
        etag: Option<String>,
        /// Caching headers.
        cache: CacheHeaders,
    },
}

/// The response headers that decide how long the set is cached.
#[derive(Clone, Debug, Default)]
pub(crate) struct CacheHeaders {
    /// `Cache-Control`, verbatim.
    pub(crate) cache_control: Option<String>,
    /// `Age` in seconds (time the response already spent in a cache).
    pub(crate) age: Option<u64>,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// Connect, TLS, request and body did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// TCP connect or TLS handshake failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// A status other than 2xx (or 304 to a conditional request).
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is over the cap.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The body is not a usable JWKS.
    #[error("{0}")]
    Invalid(#[from] jwks::JwksError),
}

/// A boxed fetch, so the source can be driven by a fake in unit tests.
pub(crate) type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + 'a>>;

/// Something that GETs the JWKS document (`fetch::HttpFetcher` in production).
pub(crate) trait Fetcher: Send + Sync + 'static {
    /// One bounded GET, conditional on `etag` when given.
    fn fetch<'a>(&'a self, etag: Option<&'a str>) -> FetchFuture<'a>;
}

/// How long a fetched set is fresh: `max-age` (less `Age`), or the default without
/// one, clamped to the policy's bounds. `no-cache` and `no-store` mean "as short as
/// allowed".
pub(crate) fn ttl(policy: &JwksFetchPolicy, cache: &CacheHeaders) -> Duration {
    let mut max_age = None;
    for directive in cache.cache_control.iter().flat_map(|c| c.split(',')) {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "max-age" => max_age = value.trim().trim_matches('"').parse::<u64>().ok(),
            "no-cache" | "no-store" => {
                max_age = Some(0);
                break;
            }
            _ => {}
        }
    }
    let raw = match max_age {
        Some(secs) => Duration::from_secs(secs.saturating_sub(cache.age.unwrap_or(0))),
        None => policy.default_ttl,
    };
    raw.clamp(policy.min_ttl, policy.max_ttl)
}

/// When to refresh a set that is fresh for `ttl`: a tenth early, so the new set is
/// in before the old one goes stale.
fn refresh_after(ttl: Duration) -> Duration {
    ttl - ttl / 10
}

/// The URL's key set and its refresh state.
pub(crate) struct RemoteJwks {
    url: String,
    fetcher: Box<dyn Fetcher>,
    policy: JwksFetchPolicy,
    /// Swapped whole after a good fetch; readers clone the `Arc` and let go.
    keys: RwLock<Arc<KeySet>>,
    /// Never held across an `.await`.
    state: Mutex<State>,
    /// Wakes `refresh_loop` for an on-demand fetch.
    kick: Notify,
    /// Counts finished fetches; on-demand waiters watch it.
    finished: watch::Sender<u64>,
    /// Delays after failed fetches.
    backoff: Backoff,
}

struct State {
    /// `ETag` of the set in force.
    etag: Option<String>,
    /// When the set in force was last confirmed (200 or 304).
    confirmed: Instant,
    /// When `refresh_loop` fetches next on its own.
    next_fetch: Instant,
    /// Failed fetches in a row.
    failures: u32,
    /// A fetch is running.
    busy: bool,
    /// An on-demand fetch was asked for and has not started yet.
    demand: bool,
    /// When the last on-demand fetch was asked for.
    last_demand: Option<Instant>,
}

impl RemoteJwks {
    /// Fetches the set for the first time, making up to `policy.startup_attempts`
    /// attempts a second or two apart. Fails with the last attempt's reason.
    pub(crate) async fn start(
        url: String,
        fetcher: Box<dyn Fetcher>,
        policy: JwksFetchPolicy,
    ) -> Result<RemoteJwks, FetchError> {
        let attempts = policy.startup_attempts.max(1);
        let mut attempt = 1;
        let (keys, etag, cache) = loop {
            let outcome = match fetcher.fetch(None).await {
                Ok(Fetched::Modified { body, etag, cache }) => {
                    jwks::parse(&body).map(|keys| (keys, etag, cache)).map_err(FetchError::from)
                }
                Ok(Fetched::NotModified(_)) => Err(FetchError::Status(304)),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(fetched) => {
                    count(Ok(false));
                    break fetched;
                }
                Err(error) => {
                    count(Err(&error));
                    tracing::warn!(%url, %error, attempt, attempts, "cannot fetch the JWKS");
                    if attempt >= attempts {
                        return Err(error);
                    }
                    tokio::time::sleep(STARTUP_PAUSE * attempt).await;
                    attempt += 1;
                }
            }
        };
        let now = Instant::now();
        let fresh = ttl(&policy, &cache);
        tracing::info!(%url, keys = keys.keys.len(), ttl = ?fresh, "fetched the JWKS");
        metrics::gauge!(JWKS_KEYS).set(keys.keys.len() as f64);
        metrics::gauge!(JWKS_AGE).set(0.0);
        let (finished, _) = watch::channel(0);
        Ok(RemoteJwks {
            url,
            fetcher,
            keys: RwLock::new(Arc::new(keys)),
            state: Mutex::new(State {
                etag,
                confirmed: now,
                next_fetch: now + refresh_after(fresh),
                failures: 0,
                busy: false,
                demand: false,
                last_demand: None,
            }),
            kick: Notify::new(),
            finished,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
                .expect("constant backoff bounds are valid"),
            policy,
        })
    }

    /// The URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The keys in force now. The lock is held only to clone the `Arc`.
    pub(crate) fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A token named a `kid` the set does not have: asks for a fetch (unless one
    /// ran for this reason within `unknown_kid_interval`) and waits for the running
    /// or requested fetch to finish, at most `unknown_kid_wait`. `true` when a
    /// fetch finished, so the caller should look at the keys again.
    ///
    /// Needs `refresh_loop` running: it does the fetching.
    pub(crate) async fn refresh_for_unknown_kid(&self) -> bool {
        let mut finished = self.finished.subscribe();
        {
            let mut state = self.state();
            if !state.busy && !state.demand {
                let now = Instant::now();
                let recent = state
                    .last_demand
                    .is_some_and(|at| now.duration_since(at) < self.policy.unknown_kid_interval);
                if recent {
                    return false;
                }
                state.demand = true;
                state.last_demand = Some(now);
                self.kick.notify_one();
            }
        }
        matches!(
            tokio::time::timeout(self.policy.unknown_kid_wait, finished.changed()).await,
            Ok(Ok(()))
        )
    }

    /// Fetches on schedule and on demand until `shutdown`.
    pub(crate) async fn refresh_loop(&self, shutdown: CancellationToken) {
        let mut age = tokio::time::interval(AGE_EVERY);
        age.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.state().next_fetch;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
                () = self.kick.notified() => {
                    // A scheduled fetch may already have served this request.
                    if !self.state().demand {
                        continue;
                    }
                }
                _ = age.tick() => {
                    self.publish_age();
                    continue;
                }
            }
            {
                let mut state = self.state();
                state.busy = true;
                state.demand = false;
            }
            self.fetch_once().await;
            self.state().busy = false;
            self.finished.send_modify(|n| *n += 1);
            self.publish_age();
        }
    }

    /// One fetch, applied: new keys swapped in, or the old ones kept.
    async fn fetch_once(&self) {
        let etag = self.state().etag.clone();
        let outcome = match self.fetcher.fetch(etag.as_deref()).await {
            Ok(Fetched::Modified { body, etag, cache }) => match jwks::parse(&body) {
                Ok(keys) => Ok((Some((keys, etag)), cache)),
                Err(e) => Err(FetchError::from(e)),
            },
            Ok(Fetched::NotModified(cache)) => Ok((None, cache)),
            Err(e) => Err(e),
        };
        let now = Instant::now();
        match outcome {
            Ok((fresh, cache)) => {
                let modified = fresh.is_some();
                let ttl = ttl(&self.policy, &cache);
                if let Some((keys, etag)) = fresh {
                    tracing::debug!(url = %self.url, keys = keys.keys.len(), ?ttl, "refreshed the JWKS");
                    metrics::gauge!(JWKS_KEYS).set(keys.keys.len() as f64);
                    *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                    self.state().etag = etag;
                }
                let mut state = self.state();
                state.confirmed = now;
                state.failures = 0;
                state.next_fetch = now + refresh_after(ttl);
                drop(state);
                count(Ok(!modified));
            }
            Err(error) => {
                count(Err(&error));
                let mut state = self.state();
                state.failures += 1;
                let delay = self.backoff.delay(state.failures - 1, &mut rand::rng());
                state.next_fetch = now + delay;
                let age = now.duration_since(state.confirmed);
                drop(state);
                tracing::warn!(
                    url = %self.url, %error, keys_age_s = age.as_secs(), retry_in = ?delay,
                    "JWKS fetch failed; keeping the last good keys"
                );
            }
        }
    }

    fn publish_age(&self) {
        let age = self.state().confirmed.elapsed();
        metrics::gauge!(JWKS_AGE).set(age.as_secs_f64());
    }
}

/// Counts one fetch in `hark_jwks_fetches_total{result}`; `Ok(true)` is a 304.
fn count(outcome: Result<bool, &FetchError>) {
    let result = match outcome {
        Ok(false) => "ok",
        Ok(true) => "not_modified",
        Err(FetchError::Timeout(_)) => "timeout",
        Err(_) => "error",
    };
    metrics::counter!(JWKS_FETCHES, "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const JWKS: &str = include_str!("../../tests/keys/jwks.json");

    fn policy() -> JwksFetchPolicy {
        JwksFetchPolicy::default()
    }

    fn cc(value: &str) -> CacheHeaders {
        CacheHeaders { cache_control: Some(value.into()), age: None }
    }

    #[test]
    fn ttl_follows_max_age_within_bounds() {
        let p = policy();
        let s = Duration::from_secs;
        assert_eq!(ttl(&p, &cc("public, max-age=19593, must-revalidate")), s(19593));
        assert_eq!(ttl(&p, &cc("Max-Age=\"600\"")), s(600));
        assert_eq!(ttl(&p, &CacheHeaders { age: Some(100), ..cc("max-age=700") }), s(600));
        assert_eq!(ttl(&p, &cc("max-age=1")), s(60), "floor");
        assert_eq!(ttl(&p, &cc("max-age=9999999")), s(24 * 3600), "ceiling");
        assert_eq!(ttl(&p, &cc("no-store, max-age=600")), s(60));
        assert_eq!(ttl(&p, &cc("public")), s(3600), "no max-age: the default");
        assert_eq!(ttl(&p, &cc("max-age=soon")), s(3600));
        assert_eq!(ttl(&p, &CacheHeaders::default()), s(3600));
    }

    /// A fake identity provider: answers from a script, counts requests, and can
    /// take a while to answer.
    struct Fake {
        calls: Arc<AtomicUsize>,
        answer: Arc<Mutex<Result<(&'static str, &'static str), ()>>>,
        latency: Duration,
    }

    impl Fetcher for Fake {
        fn fetch<'a>(&'a self, _etag: Option<&'a str>) -> FetchFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.latency).await;
                match *self.answer.lock().unwrap() {
                    Ok((body, cache_control)) => Ok(Fetched::Modified {
                        body: Bytes::from_static(body.as_bytes()),
                        etag: None,
                        cache: cc(cache_control),
                    }),
                    Err(()) => Err(FetchError::Status(503)),
                }
            })
        }
    }

    type Answer = Arc<Mutex<Result<(&'static str, &'static str), ()>>>;

    async fn source(
        cache_control: &'static str,
        latency: Duration,
    ) -> (Arc<RemoteJwks>, Arc<AtomicUsize>, Answer) {
        let calls = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new(Ok((JWKS, cache_control))));
        let fake = Fake { calls: calls.clone(), answer: answer.clone(), latency };
        let jwks = RemoteJwks::start("http://idp.test/jwks".into(), Box::new(fake), policy())
            .await
            .expect("first fetch");
        (Arc::new(jwks), calls, answer)
    }

    fn spawn_loop(jwks: &Arc<RemoteJwks>) -> CancellationToken {
        let stop = CancellationToken::new();
        let (jwks, token) = (jwks.clone(), stop.clone());
        tokio::spawn(async move { jwks.refresh_loop(token).await });
        stop
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_a_tenth_before_max_age_and_keeps_keys_when_the_idp_fails() {
        let (jwks, calls, answer) = source("max-age=100", Duration::ZERO).await;
        let _stop = spawn_loop(&jwks);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(89)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "not before 90 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "refreshed at 90 s");

        // The provider goes down: fetches fail, the keys stay, retries back off.
        *answer.lock().unwrap() = Err(());
        tokio::time::sleep(Duration::from_secs(91)).await;
        let failed = calls.load(Ordering::SeqCst);
        assert!(failed >= 3, "{failed}");
        assert_eq!(jwks.keys().keys.len(), 2, "last good keys kept");
        tokio::time::sleep(Duration::from_secs(600)).await;
        let retries = calls.load(Ordering::SeqCst) - failed;
        // Backoff (full jitter) from 1 s to 5 min: ten minutes hold a dozen or so
        // retries, not hundreds; every ceiling is ≤ 5 min, so there are at least two.
        assert!((2..=40).contains(&retries), "{retries} retries in 10 minutes");
        assert_eq!(jwks.keys().keys.len(), 2);

        // Back up: the next retry (within 5 min) restores the schedule.
        *answer.lock().unwrap() = Ok((JWKS, "max-age=3600"));
        let before = calls.load(Ordering::SeqCst);
        let waited = Instant::now();
        while calls.load(Ordering::SeqCst) == before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(waited.elapsed() <= Duration::from_secs(301), "{:?}", waited.elapsed());
        let healed = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3200)).await;
        assert_eq!(calls.load(Ordering::SeqCst), healed, "fresh for an hour again");
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), healed + 1, "refreshed at 54 minutes");
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kids_cause_one_fetch_however_many_ask_and_at_most_once_a_minute() {
        let (jwks, calls, _answer) = source("max-age=86400", Duration::from_millis(300)).await;
        let _stop = spawn_loop(&jwks);
        let asks: Vec<_> = (0..100)
            .map(|_| {
                let jwks = jwks.clone();
                tokio::spawn(async move { jwks.refresh_for_unknown_kid().await })
            })
            .collect();
        for ask in asks {
            assert!(ask.await.unwrap(), "every asker saw the fetch finish");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "start + one on-demand fetch");

        // Within the minute: refused at once, nothing fetched.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let started = Instant::now();
        assert!(!jwks.refresh_for_unknown_kid().await);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // A minute on: allowed again.
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(jwks.refresh_for_unknown_kid().await);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_kid_waits_at_most_the_bound_for_a_slow_idp() {
        let (jwks, calls, _answer) = source("max-age=86400", Duration::from_secs(4)).await;
        let _stop = spawn_loop(&jwks);
        let started = Instant::now();
        assert!(!jwks.refresh_for_unknown_kid().await, "gave up waiting");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // The fetch itself carries on and lands for the next upgrade.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(*jwks.finished.borrow(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn start_retries_then_fails_with_the_reason() {
        let calls = Arc::new(AtomicUsize::new(0));
        let fake = Fake {
            calls: calls.clone(),
            answer: Arc::new(Mutex::new(Err(()))),
            latency: Duration::ZERO,
        };
        let started = Instant::now();
        let err = RemoteJwks::start("http://idp.test/jwks".into(), Box::new(fake), policy())
            .await
            .err()
            .expect("refused");
        assert_eq!(err.to_string(), "HTTP status 503");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(started.elapsed(), Duration::from_secs(3), "paused 1 s then 2 s");

        let empty = Fake {
            calls: Arc::new(AtomicUsize::new(0)),
            answer: Arc::new(Mutex::new(Ok((r#"{"keys":[]}"#, "max-age=60")))),
            latency: Duration::ZERO,
        };
        let err = RemoteJwks::start("http://idp.test/jwks".into(), Box::new(empty), policy())
            .await
            .err()
            .expect("an empty set is refused");
        assert!(err.to_string().contains("no usable"), "{err}");
    }
}
