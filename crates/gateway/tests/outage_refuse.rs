//! Design §6 under a hard pusher outage: 200 live sessions, pusher refusing every
//! connection. No client is disconnected, transcripts keep flowing, and the pod
//! breaker opens. How few dials that leaves is proven on the paused clock
//! (`pusher::link::tests`, the breaker's tests); this is the end-to-end proof.

mod common;

use std::time::Duration;

use common::{dials, pusher_timings, query, Harness, FRAME_16K};
use futures::future::join_all;
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_fakes::fake_stt::{silence, synth, VOCAB};
use hark_proto::ProcessingStatus;
use hark_resilience::breaker::BreakerState;

const SESSIONS: usize = 200;
const COOLDOWN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_survive_a_refusing_pusher_behind_an_open_breaker() {
    let h = Harness::start(Some(PusherMode::Refuse), |c| {
        pusher_timings(c, |p| {
            p.breaker_cooldown = COOLDOWN;
            p.degraded_probe_interval = Duration::from_secs(600);
        })
    })
    .await;
    let addr = h.addr();

    // Connect every session and wait until each is transcribing and degraded.
    let clients = join_all((0..SESSIONS).map(|i| async move {
        let mut c = ListenClient::connect(addr, &query(&format!("user-{i}"), 60), &[])
            .await
            .expect("upgrade");
        let ok = c
            .wait_for(Duration::from_secs(30), |r| {
                *r == Received::Processing(ProcessingStatus::Degraded)
            })
            .await;
        assert!(ok, "session {i} never degraded: {:?}", c.received);
        c
    }))
    .await;
    let breaker = h.gateway.shared().pusher.as_ref().unwrap().breaker.clone();
    assert_ne!(breaker.state(), BreakerState::Closed, "200 failed first dials open the breaker");

    let before = h.scrape().await;
    let dials_at_open = dials(&before);
    assert!(dials_at_open >= 20.0, "at least the threshold's dials were made: {dials_at_open}");

    // Every client keeps receiving transcripts while pusher is down.
    let spoken: Vec<(&str, u32)> = vec![(VOCAB[2], 0), (VOCAB[4], 0), (VOCAB[6], 1)];
    let mut pcm = synth(&spoken, 16_000);
    pcm.extend(silence(0.5, 16_000));
    let clients = join_all(clients.into_iter().map(|mut c| {
        let pcm = pcm.clone();
        async move {
            c.send_audio(&pcm, FRAME_16K).await.expect("send audio");
            let got =
                c.wait_for(Duration::from_secs(30), |r| matches!(r, Received::Segments(..))).await;
            assert!(got, "no transcript during the outage: {:?}", c.received);
            c
        }
    }))
    .await;

    // The dial bound itself (one probe per cooldown, zero session dials while open)
    // is proven on the paused clock in `pusher::link::tests` and the breaker's
    // tests; here, end to end over real sockets, the breaker opened and counted.
    let after = h.scrape().await;
    assert!(after.get("pusher_circuit_breaker_transitions_total", &[("to", "open")]) >= 1.0);

    // Nobody was disconnected.
    for c in &clients {
        assert!(
            !c.received.iter().any(|r| matches!(r, Received::Closed(..))),
            "a client was closed during the outage"
        );
    }
    assert_eq!(after.get("hark_sessions_active", &[]), SESSIONS as f64);
    assert_eq!(after.get("pusher_sessions_degraded", &[]), SESSIONS as f64);
}
