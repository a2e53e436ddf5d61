//! The swarm against a real `hark` binary and in-process fakes: words are matched
//! to their audio, conversations are announced and reach pusher, nobody is
//! disconnected. The test builds `hark` first with the cargo that built it (a
//! no-op when fresh), so it never skips and never runs a stale binary;
//! `scripts/drill-ci.sh` runs the full drill.

use std::ffi::OsStr;
use std::time::Duration;

use hark_fakes::fake_pusher::{FakePusher, FakePusherConfig};
use hark_fakes::fake_stt::{FakeStt, FakeSttConfig};
use hark_fakes::process::HarkProcess;
use hark_loadtest::drill::procs;
use hark_loadtest::swarm::{self, CodecMix, Outputs, Script, Source, SwarmConfig};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn swarm_measures_words_and_conversations_through_hark() {
    let release = !cfg!(debug_assertions);
    let built = procs::cargo_build(OsStr::new(env!("CARGO")), &["hark"], release)
        .await
        .expect("hark builds");
    let binary = built.get("hark").expect("cargo reports the hark binary");
    let stt = FakeStt::start(FakeSttConfig {
        words_per_result: 1,
        latency: Duration::from_millis(50),
        ..FakeSttConfig::default()
    })
    .await
    .unwrap();
    let pusher = FakePusher::start(FakePusherConfig::default()).await.unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let args: Vec<String> = ["--stt", "deepgram", "--stt-url", &stt.url(), "--stt-api-key", "k"]
        .into_iter()
        .chain(["--pusher-url", &pusher.url(), "--outbox-dir", outbox.path().to_str().unwrap()])
        .map(str::to_owned)
        .collect();
    let hark = HarkProcess::start(binary, &args).await;
    let listen = hark.client;

    let dir = tempfile::tempdir().unwrap();
    let config = SwarmConfig {
        url: format!("ws://{listen}"),
        clients: 6,
        ramp_rate: 20.0,
        duration: Duration::from_secs(6),
        frame: Duration::from_millis(100),
        sample_rate: 8000,
        codecs: CodecMix::default(),
        source: Source::Generated(Script {
            words_per_utterance: 2,
            talk: Duration::from_secs(2),
            pause: Duration::from_millis(2500),
        }),
        conversation_timeout: Some(Duration::from_secs(1)),
        extra_query: None,
        uid_prefix: "it".into(),
        reconnect: true,
        settle: Duration::from_secs(3),
        seed: 3,
        plain: false,
    };
    let outputs = Outputs {
        progress_json: false,
        latency_log: Some(dir.path().join("latency.csv")),
        conversation_ids: Some(dir.path().join("ids.csv")),
    };
    let result = swarm::run(config, outputs, CancellationToken::new()).await.unwrap();
    drop(hark);

    assert!(result.errors.is_empty(), "{:?}", result.errors);
    assert!(result.disconnects.is_empty(), "{:?}", result.disconnects);
    assert_eq!(result.sessions_opened, 6);
    assert!(result.words.matched >= 12, "{:?}", result.words);
    assert_eq!((result.words.lost, result.words.unmatched), (0, 0), "{:?}", result.words);
    let p99 = result.latency.p99_ms.unwrap();
    assert!((50.0..1000.0).contains(&p99), "p99 {p99} ms");
    assert_eq!(result.conversations.never_announced, 0, "{:?}", result.conversations);
    assert!(result.conversations.total >= 6, "{:?}", result.conversations);
    let ids = std::fs::read_to_string(dir.path().join("ids.csv")).unwrap();
    let processed = pusher.processed_ids();
    for line in ids.lines() {
        let id = line.split(',').next().unwrap();
        assert!(processed.iter().any(|p| p == id), "{id} announced but not processed");
    }
    let log = std::fs::read_to_string(dir.path().join("latency.csv")).unwrap();
    assert_eq!(log.lines().count() as u64, result.words.matched);
    assert_eq!(result.statuses.get("ready"), Some(&6));
}
