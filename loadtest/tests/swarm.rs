//! The swarm against a real `hark` binary and in-process fakes: words are matched
//! to their audio, conversations are announced and reach pusher, nobody is
//! disconnected. Skipped (with a message) when no `hark` binary has been built;
//! `scripts/drill-ci.sh` builds it and runs the full drill.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hark_fakes::fake_pusher::{FakePusher, FakePusherConfig};
use hark_fakes::fake_stt::{FakeStt, FakeSttConfig};
use hark_loadtest::swarm::{self, Outputs, Script, Source, SwarmConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// `$HARK_BIN`, or `hark` beside this package's binaries (debug, then release).
fn hark_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HARK_BIN") {
        return Some(PathBuf::from(path));
    }
    let swarm = PathBuf::from(env!("CARGO_BIN_EXE_swarm"));
    let dir = swarm.parent()?;
    [dir.join("hark"), dir.parent()?.join("release").join("hark")].into_iter().find(|p| p.is_file())
}

#[tokio::test]
async fn swarm_measures_words_and_conversations_through_hark() {
    let Some(hark) = hark_binary() else {
        eprintln!("skipped: no hark binary (cargo build -p hark, or set HARK_BIN)");
        return;
    };
    let stt = FakeStt::start(FakeSttConfig {
        words_per_result: 1,
        latency: Duration::from_millis(50),
        ..FakeSttConfig::default()
    })
    .await
    .unwrap();
    let pusher = FakePusher::start(FakePusherConfig::default()).await.unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(&hark)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--stt", "deepgram"])
        .args(["--stt-url", &stt.url(), "--stt-api-key", "k", "--log-format", "json"])
        .args(["--pusher-url", &pusher.url()])
        .arg("--outbox-dir")
        .arg(outbox.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if value["fields"]["message"] == "hark is listening" {
                return value["fields"]["listen"].as_str().unwrap().to_owned();
            }
        }
        panic!("hark exited before listening");
    })
    .await
    .expect("hark listens within 20 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let dir = tempfile::tempdir().unwrap();
    let config = SwarmConfig {
        url: format!("ws://{listen}"),
        clients: 6,
        ramp_rate: 20.0,
        duration: Duration::from_secs(6),
        frame: Duration::from_millis(100),
        sample_rate: 8000,
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
    };
    let outputs = Outputs {
        progress_json: false,
        latency_log: Some(dir.path().join("latency.csv")),
        conversation_ids: Some(dir.path().join("ids.csv")),
    };
    let result = swarm::run(config, outputs, CancellationToken::new()).await.unwrap();
    let _ = child.start_kill();

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
