//! A pusher (or a proxy in front of it) that accepts every handshake and drops the
//! link at once. Dials "succeed", so only treating short-lived links as failures
//! keeps every session from redialing every second forever: the breaker must open
//! and the process must go quiet.

mod common;

use std::time::Duration;

use common::{pusher_timings, query, Harness};
use futures::future::join_all;
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_proto::ProcessingStatus;
use hark_resilience::breaker::BreakerState;
use tokio::time::Instant;

const SESSIONS: usize = 40;
const COOLDOWN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_then_drop_opens_the_breaker_instead_of_a_dial_storm() {
    let h = Harness::start(Some(PusherMode::Close1011), |c| {
        pusher_timings(c, |p| {
            p.breaker_cooldown = COOLDOWN;
            p.reconnect_base = Duration::from_millis(200);
            p.reconnect_max = Duration::from_secs(2);
            p.degraded_probe_interval = Duration::from_secs(600);
        })
    })
    .await;
    let addr = h.addr();
    let clients = join_all((0..SESSIONS).map(|i| async move {
        let mut c =
            ListenClient::connect(addr, &query(&format!("flap-{i}"), 60), &[]).await.unwrap();
        assert!(
            c.wait_for(Duration::from_secs(30), |r| *r
                == Received::Processing(ProcessingStatus::Degraded))
                .await
        );
        c
    }))
    .await;
    let breaker = h.gateway.shared().pusher.as_ref().unwrap().breaker.clone();
    let mut states = breaker.subscribe();
    if *states.borrow_and_update() == BreakerState::Closed {
        tokio::time::timeout(
            Duration::from_secs(20),
            states.wait_for(|s| *s != BreakerState::Closed),
        )
        .await
        .expect("the breaker opens")
        .unwrap();
    }
    let opened = Instant::now();
    let at_open = h.pusher().stats().handshakes;
    tokio::time::sleep(COOLDOWN * 3).await;
    let during = h.pusher().stats().handshakes - at_open;
    let allowed = (opened.elapsed().as_secs_f64() / COOLDOWN.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        during <= allowed,
        "{during} handshakes in {:?} after the breaker opened (allowed {allowed})",
        opened.elapsed()
    );
    assert_ne!(
        breaker.state(),
        BreakerState::Closed,
        "a probe that is dropped at once must not close the breaker"
    );
    for c in &clients {
        assert!(
            !c.received.iter().any(|r| matches!(r, Received::Closed(..))),
            "no client is disconnected"
        );
    }
}
