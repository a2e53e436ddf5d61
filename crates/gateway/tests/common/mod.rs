//! Shared harness for the gateway's integration tests: fakes of both upstreams on
//! `127.0.0.1:0`, a gateway wired to them, and small HTTP helpers for the admin port.

#![allow(dead_code)]

pub mod independent;

use std::net::SocketAddr;
use std::time::Duration;

use hark_gateway::config::GatewayConfig;
use hark_gateway::Gateway;
use hark_fakes::fake_pusher::{FakePusher, FakePusherConfig, PusherMode};
use hark_fakes::fake_stt::{FakeStt, FakeSttConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    /// The value of one metric sample line (`name{labels}` exactly as rendered), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics").await;
        metric_value(&body, series)
    }
}

/// A minimal HTTP/1.0 GET.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect admin");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write request");
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
        .await
        .expect("admin answers in time")
        .expect("read response");
    let status = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Finds `series` (e.g. `hark_sessions_total{outcome="client_closed"}`) in
/// Prometheus text and returns its value, or 0 when absent.
pub fn metric_value(body: &str, series: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
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

/// Sum of every `pusher_connect_attempts_total{result=…}` sample: real dials made.
pub fn dials(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("pusher_connect_attempts_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits up to 10 s for the fake pusher to be dialed for `uid` (a session's link
/// sends its first frame soon after the session starts).
pub async fn pusher_saw_uid(h: &Harness, uid: &str) -> bool {
    for _ in 0..500 {
        if h.pusher().frames().iter().any(|f| f.uid == uid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
