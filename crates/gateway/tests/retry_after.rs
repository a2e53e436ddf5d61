//! A 429/503 with `Retry-After` on a pusher upgrade opens the pod breaker for the
//! delay: no dial reaches pusher until it has passed. Both RFC 9110 forms.

mod common;

use std::time::{Duration, SystemTime};

use common::{pusher_timings, query, Harness};
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_proto::ProcessingStatus;
use tokio::time::Instant;

async fn quiet_period_after_429(retry_after: String, at_least: Duration) {
    let h =
        Harness::start(Some(PusherMode::Http429 { retry_after: Some(retry_after.clone()) }), |c| {
            pusher_timings(c, |p| {
                // Cooldown shorter than the Retry-After so the delay is what holds it.
                p.breaker_cooldown = Duration::from_secs(1);
                p.degraded_probe_interval = Duration::from_secs(600);
            })
        })
        .await;
    let mut client = ListenClient::connect(h.addr(), &query("frank", 60), &[]).await.unwrap();
    assert!(h.pusher().wait_handshakes(1, Duration::from_secs(10)).await);
    let answered = Instant::now();
    assert!(
        client
            .wait_for(Duration::from_secs(10), |r| *r
                == Received::Processing(ProcessingStatus::Degraded))
            .await
    );

    // The next dial anywhere in the process (the breaker's probe) waits out the delay.
    assert!(
        h.pusher().wait_handshakes(2, Duration::from_secs(15)).await,
        "the prober never came back"
    );
    let quiet = answered.elapsed();
    assert!(quiet >= at_least, "Retry-After {retry_after:?}: next dial after only {quiet:?}");
    assert!(
        quiet < at_least + Duration::from_secs(4),
        "Retry-After {retry_after:?}: waited {quiet:?}"
    );
    assert_eq!(h.pusher().stats().handshakes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_seconds_hold_every_dial_off() {
    quiet_period_after_429("5".into(), Duration::from_millis(4_900)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_http_date_holds_every_dial_off() {
    // HTTP-dates have one-second resolution: the delay lands in (4 s, 5 s].
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(5));
    quiet_period_after_429(date, Duration::from_millis(3_900)).await;
}
