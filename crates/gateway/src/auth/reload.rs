//! The JWKS file as a live source of keys: read once by `JwtAuth::load`, then
//! polled by the reloader, which swaps a new key set in whole when the file changes
//! and keeps the old one when the new file is unusable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::jwks::{self, JwksError, KeySet, MAX_JWKS_BYTES};
use super::AuthSetupError;
use crate::metrics::JWKS_KEYS;

/// What identifies one version of the file on disk: a change to either means
/// "read it again".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
}

/// The file's current fingerprint.
fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let meta = std::fs::metadata(path)?;
    Ok(Fingerprint { modified: meta.modified().ok(), len: meta.len() })
}

/// Why reading the file failed.
enum LoadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file was read but is not a usable JWKS; carries the version that was read.
    Invalid(Fingerprint, JwksError),
}

/// Reads and parses the file. The fingerprint is taken before reading, so a write
/// that lands during the read shows up as a change at the next poll.
fn load(path: &Path) -> Result<(Fingerprint, KeySet), LoadError> {
    let fp = fingerprint(path).map_err(LoadError::Io)?;
    if fp.len > MAX_JWKS_BYTES as u64 {
        return Err(LoadError::Invalid(fp, JwksError::TooLarge));
    }
    let bytes = std::fs::read(path).map_err(LoadError::Io)?;
    let keys = jwks::parse(&bytes).map_err(|e| LoadError::Invalid(fp, e))?;
    Ok((fp, keys))
}

/// The JWKS file and the key set last loaded from it.
pub(crate) struct JwksSource {
    path: PathBuf,
    /// Swapped whole by the reloader; readers clone the `Arc` and let go.
    keys: RwLock<Arc<KeySet>>,
    /// The version of the file that `load` read: where the reloader starts.
    loaded: Fingerprint,
}

impl JwksSource {
    /// Loads the file, or says why it cannot be used.
    pub(crate) fn load(path: PathBuf) -> Result<JwksSource, AuthSetupError> {
        match load(&path) {
            Ok((loaded, keys)) => {
                metrics::gauge!(JWKS_KEYS).set(keys.keys.len() as f64);
                Ok(JwksSource { path, keys: RwLock::new(Arc::new(keys)), loaded })
            }
            Err(LoadError::Io(source)) => Err(AuthSetupError::ReadJwks { path, source }),
            Err(LoadError::Invalid(_, source)) => Err(AuthSetupError::InvalidJwks { path, source }),
        }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The keys in force now. The lock is held only to clone the `Arc`.
    pub(crate) fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The reloader: polls the file every `every` until `shutdown`, each poll on
    /// the blocking pool (it touches the disk).
    pub(crate) async fn reload_loop(&self, every: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // The first tick is immediate; `load` has just read the file.
        let mut seen = self.loaded;
        // The file being briefly absent or unreadable is logged once, not every tick.
        let mut unreadable_logged = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let path = self.path.clone();
            let poll = tokio::task::spawn_blocking(move || poll_jwks(&path, seen)).await;
            match poll {
                Ok(Poll::Unchanged) => unreadable_logged = false,
                Ok(Poll::Reloaded(fp, keys)) => {
                    tracing::info!(
                        path = %self.path.display(), keys = keys.keys.len(),
                        "reloaded the JWKS file"
                    );
                    metrics::gauge!(JWKS_KEYS).set(keys.keys.len() as f64);
                    *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                    seen = fp;
                    unreadable_logged = false;
                }
                Ok(Poll::Invalid(fp, error)) => {
                    tracing::error!(
                        path = %self.path.display(), %error,
                        "the JWKS file changed but is not usable; keeping the previous keys"
                    );
                    // Not retried until the file changes again.
                    seen = fp;
                    unreadable_logged = false;
                }
                Ok(Poll::Unreadable(error)) => {
                    if !unreadable_logged {
                        tracing::error!(
                            path = %self.path.display(), %error,
                            "cannot read the JWKS file; keeping the previous keys"
                        );
                        unreadable_logged = true;
                    }
                }
                Err(join) => tracing::error!(error = %join, "the JWKS reload task failed"),
            }
        }
    }
}

/// The outcome of one look at the JWKS file.
enum Poll {
    Unchanged,
    Reloaded(Fingerprint, KeySet),
    Invalid(Fingerprint, JwksError),
    Unreadable(std::io::Error),
}

fn poll_jwks(path: &Path, seen: Fingerprint) -> Poll {
    match fingerprint(path) {
        Ok(fp) if fp == seen => return Poll::Unchanged,
        Ok(_) => {}
        Err(e) => return Poll::Unreadable(e),
    }
    match load(path) {
        Ok((fp, keys)) => Poll::Reloaded(fp, keys),
        Err(LoadError::Invalid(fp, e)) => Poll::Invalid(fp, e),
        Err(LoadError::Io(e)) => Poll::Unreadable(e),
    }
}
