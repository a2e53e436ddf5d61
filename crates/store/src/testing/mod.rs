//! Real Postgres and Redis servers for tests (feature `testing`), started from
//! the Debian packages that `scripts/setup.sh` installs.
//!
//! Each server runs in its own temporary directory on a free loopback port, with
//! nothing persisted, and is stopped and deleted on drop. [`PgServer::stop`] /
//! [`PgServer::restart`] (and the same on [`RedisServer`]) take it down and bring
//! it back on the same port, for outage tests. A server left behind by a test
//! process that was killed (so its drop never ran) is found by the next start —
//! its directory names a dead owner — and stopped and deleted, so it can never
//! block a later run.
//!
//! When the binaries are missing the constructors **panic** with a message that
//! names `scripts/setup.sh`: a test that needs a real engine fails, never skips.

mod pg_server;
mod reaper;
mod redis_server;

use std::net::TcpListener;
use std::process::Command;

pub use pg_server::PgServer;
pub use redis_server::{CommandStats, RedisServer};

/// A port nobody listens on right now (the server may still lose a race for it;
/// the starters retry with another).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Panics with the fix for a missing engine.
fn missing(what: &str) -> ! {
    panic!(
        "{what} not found: these tests run a real server; install it with \
         `sudo scripts/setup.sh` (it installs postgresql and redis-server)"
    )
}

/// Whether this process runs as root (Postgres refuses to).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}
