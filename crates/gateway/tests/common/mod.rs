//! Shared harness for the gateway's integration tests: fakes of both upstreams on
//! `127.0.0.1:0`, a gateway wired to them, and small HTTP helpers for the admin port.

#![allow(dead_code)]

pub mod independent;

use std::net::SocketAddr;
use std::time::Duration;

use hark_fakes::admin;
use hark_fakes::fake_pusher::{FakePusher, FakePusherConfig, PusherMode};
use hark_fakes::fake_stt::{FakeStt, FakeSttConfig};
use hark_fakes::prom::Scrape;
use hark_gateway::config::GatewayConfig;
use hark_gateway::Gateway;

/// 16 kHz PCM16: bytes per 100 ms frame.
pub const FRAME_16K: usize = 3_200;

/// A gateway with a fake STT and (optionally) a fake pusher.
pub struct Harness {
    pub gateway: Gateway,
    pub stt: FakeStt,
    pub pusher: Option<FakePusher>,
    pub outbox: tempfile::TempDir,
}

impl Harness {
    /// Starts everything; `tweak` adjusts the config before the gateway starts.
    pub async fn start(
        pusher_mode: Option<PusherMode>,
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        Self::start_with_stt(FakeSttConfig::default(), pusher_mode, tweak).await
    }

    /// As [`Harness::start`], with the fake STT configured by `stt` (its API key is
    /// always the one the gateway sends).
    pub async fn start_with_stt(
        stt: FakeSttConfig,
        pusher_mode: Option<PusherMode>,
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let stt = FakeStt::start(FakeSttConfig { api_key: Some("test-key".into()), ..stt })
            .await
            .expect("fake stt starts");
        let pusher = match pusher_mode {
            Some(mode) => Some(
                FakePusher::start(FakePusherConfig {
                    mode,
                    record: true,
                    ..FakePusherConfig::default()
                })
                .await
                .expect("fake pusher starts"),
            ),
            None => None,
        };
        let outbox = tempfile::tempdir().expect("tempdir");
        let mut config = GatewayConfig::for_tests(
            &stt.url(),
            pusher.as_ref().map(|p| p.url()).as_deref(),
            outbox.path().to_path_buf(),
        );
        tweak(&mut config);
        let gateway = Gateway::start(config).await.expect("gateway starts");
        Self { gateway, stt, pusher, outbox }
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway.client_addr()
    }

    pub fn pusher(&self) -> &FakePusher {
        self.pusher.as_ref().expect("harness has a pusher")
    }

    /// `GET path` on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.gateway.admin_addr(), path).await
    }

    /// `/metrics`, parsed. Metrics are per process and the tests of a file share
    /// it: compare two scrapes ([`Scrape::increase`]) rather than read a count.
    pub async fn scrape(&self) -> Scrape {
        admin::scrape(self.gateway.admin_addr()).await.expect("/metrics answers")
    }

    /// One series from a fresh scrape (0 when absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape().await.get(name, labels)
    }
}

/// `GET path`: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin::get(addr, path).await.expect("the admin port answers in time")
}

/// The query a 16 kHz client sends.
pub fn query(uid: &str, conversation_timeout: u32) -> String {
    format!("uid={uid}&sample_rate=16000&codec=pcm16&conversation_timeout={conversation_timeout}")
}

/// Adjusts the pusher timings of a config (which must have a pusher).
pub fn pusher_timings(
    config: &mut GatewayConfig,
    f: impl FnOnce(&mut hark_gateway::config::PusherConfig),
) {
    f(config.pusher.as_mut().expect("config has a pusher"));
}

/// Real dials made so far: every `pusher_connect_attempts_total{result}` summed.
pub fn dials(scrape: &Scrape) -> f64 {
    scrape.get("pusher_connect_attempts_total", &[])
}

/// Waits up to 10 s for the fake pusher to be dialed for `uid` (a session's link
/// sends its first frame soon after the session starts).
pub async fn pusher_saw_uid(h: &Harness, uid: &str) -> bool {
    let timeout = Duration::from_secs(10);
    h.pusher().wait_frames(timeout, |frames| frames.iter().any(|f| f.uid == uid)).await
}
