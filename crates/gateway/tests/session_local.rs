//! A pusher closing one session's link with 1011 is that session's problem alone:
//! it reconnects, the other sessions' links are untouched, and the pod breaker does
//! not trip.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{query, Harness, FRAME_16K};
use futures::{SinkExt, StreamExt};
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_stt::{silence, synth, VOCAB};
use hark_gateway::config::GatewayConfig;
use hark_proto::{Ack, ProcessingStatus, PusherFrame, ServiceStatus};
use hark_resilience::breaker::BreakerState;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// A pusher that acks 104s and closes one user's links with 1011 on demand.
struct MiniPusher {
    addr: SocketAddr,
    handshakes: Arc<Mutex<HashMap<String, usize>>>,
    kill: broadcast::Sender<String>,
}

impl MiniPusher {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(HashMap::new()));
        let (kill, _) = broadcast::channel(16);
        let (counts, killer) = (handshakes.clone(), kill.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (counts, mut kill_rx) = (counts.clone(), killer.subscribe());
                tokio::spawn(async move {
                    let mut uid = String::new();
                    let ws = tokio_tungstenite::accept_hdr_async(
                        tcp,
                        |req: &Request, resp: Response| {
                            let q = req.uri().query().unwrap_or("");
                            uid = q
                                .split('&')
                                .find_map(|kv| kv.strip_prefix("uid="))
                                .unwrap_or("")
                                .to_owned();
                            Ok(resp)
                        },
                    )
                    .await;
                    let Ok(mut ws) = ws else { return };
                    *counts.lock().unwrap().entry(uid.clone()).or_insert(0) += 1;
                    loop {
                        tokio::select! {
                            message = ws.next() => match message {
                                Some(Ok(Message::Binary(b))) => {
                                    if let Ok(PusherFrame::Process(p)) = PusherFrame::decode(b) {
                                        let ack = PusherFrame::Ack(Ack::ok(p.conversation_id)).encode();
                                        let _ = ws.send(Message::Binary(ack)).await;
                                    }
                                }
                                Some(Ok(_)) => {}
                                _ => return,
                            },
                            Ok(victim) = kill_rx.recv() => if victim == uid {
                                let frame = CloseFrame { code: CloseCode::Error, reason: "internal error".into() };
                                let _ = ws.close(Some(frame)).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, handshakes, kill }
    }

    fn handshakes(&self, uid: &str) -> usize {
        self.handshakes.lock().unwrap().get(uid).copied().unwrap_or(0)
    }

    async fn wait(&self, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..200 {
            if done(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1011_on_one_link_reconnects_that_session_only() {
    let pusher = MiniPusher::start().await;
    let url = format!("ws://{}", pusher.addr);
    let h = Harness::start(None, |c| {
        c.pusher = GatewayConfig::for_tests("ws://unused", Some(&url), c.outbox.dir.clone()).pusher;
        let p = c.pusher.as_mut().unwrap();
        p.reconnect_base = Duration::from_millis(200);
        p.reconnect_max = Duration::from_secs(1);
    })
    .await;

    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c =
            ListenClient::connect(h.addr(), &query(&format!("u{i}"), 60), &[]).await.unwrap();
        assert!(
            c.wait_for(Duration::from_secs(10), |r| *r == Received::Status(ServiceStatus::Ready))
                .await
        );
        clients.push(c);
    }
    assert!(pusher.wait(|p| (0..5).all(|i| p.handshakes(&format!("u{i}")) == 1)).await);

    pusher.kill.send("u2".into()).unwrap();
    assert!(pusher.wait(|p| p.handshakes("u2") == 2).await, "the closed session reconnects");
    // Give any wrongly shared reaction time to show, then check nobody else moved.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in [0, 1, 3, 4] {
        assert_eq!(pusher.handshakes(&format!("u{i}")), 1, "u{i} was disturbed");
    }
    let breaker = h.gateway.shared().pusher.as_ref().unwrap().breaker.clone();
    assert_eq!(breaker.state(), BreakerState::Closed);

    // The affected client never noticed: no degraded status, transcripts continue.
    let c = &mut clients[2];
    let mut pcm = synth(&[(VOCAB[8], 0)], 16_000);
    pcm.extend(silence(0.5, 16_000));
    c.send_audio(&pcm, FRAME_16K).await.unwrap();
    assert!(c.wait_for(Duration::from_secs(10), |r| matches!(r, Received::Segments(..))).await);
    assert!(!c.processing().contains(&ProcessingStatus::Degraded));
}
