//! Hostile clients against the real `hark` process. Each attack gets its named
//! outcome (a close code or HTTP status), the process releases what the attackers
//! held, and a well-behaved session on the same process keeps its transcript
//! latency. Raw frames are written by hand here so they can be wrong on purpose.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{http_get, open_fds};
use futures::future::join_all;
use hark_fakes::admin;
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_stt::{silence, synth, FakeStt, FakeSttConfig, VOCAB};
use hark_fakes::prom::Scrape;
use hark_proto::ServiceStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const QUERY: &str = "sample_rate=16000&codec=pcm16&conversation_timeout=600";

/// A client frame (masked, as RFC 6455 requires of clients).
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65_536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Nice 19 for the calling thread and the threads it spawns after (Linux nice
/// values are per thread and inherited). `renice` on a thread id renices that
/// thread alone; the crate forbids the `unsafe` a direct `setpriority` needs.
fn lowest_priority_for_this_thread() {
    let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let tid = me.file_name().and_then(|t| t.to_str()).expect("a thread id").to_owned();
    let out = std::process::Command::new("renice")
        .args(["-n", "19", "-p", &tid])
        .output()
        .expect("renice (util-linux) runs");
    assert!(out.status.success(), "renice: {}", String::from_utf8_lossy(&out.stderr));
}

/// Upgrades by hand; returns the socket after the 101.
async fn raw_upgrade(addr: SocketAddr, uid: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v4/listen?uid={uid}&{QUERY} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// Reads server frames until a close; returns its code (None: EOF without close).
async fn close_code(tcp: &mut TcpStream, limit: Duration) -> Option<u16> {
    tokio::time::timeout(limit, async {
        loop {
            let mut h = [0u8; 2];
            tcp.read_exact(&mut h).await.ok()?;
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut l = [0u8; 2];
                tcp.read_exact(&mut l).await.ok()?;
                len = u64::from(u16::from_be_bytes(l));
            } else if len == 127 {
                let mut l = [0u8; 8];
                tcp.read_exact(&mut l).await.ok()?;
                len = u64::from_be_bytes(l);
            }
            let mut payload = vec![0u8; len as usize];
            tcp.read_exact(&mut payload).await.ok()?;
            if h[0] & 0x0f == 0x8 {
                return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// The well-behaved session: a 0.5 s word (the fake STT answers as soon as the
/// word's chunk is complete), then 0.5 s of silence, at about real-time pace.
/// Latency runs from sending the word's last frame to its segment arriving.
async fn measure(client: &mut ListenClient, cycles: usize) -> Vec<Duration> {
    let pace = Duration::from_millis(90);
    let mut latencies = Vec::new();
    for i in 0..cycles {
        let word = synth(&[(VOCAB[i % VOCAB.len()], 0)], 16_000);
        for f in word.chunks(3_200) {
            tokio::time::sleep(pace).await;
            client.send_frame(bytes::Bytes::copy_from_slice(f)).await.unwrap();
        }
        let sent_at = Instant::now();
        let got =
            client.wait_for(Duration::from_secs(5), |r| matches!(r, Received::Segments(..))).await;
        assert!(got, "well-behaved session lost its transcript: {:?}", client.received.last());
        latencies.push(sent_at.elapsed());
        for f in silence(0.5, 16_000).chunks(3_200) {
            tokio::time::sleep(pace).await;
            client.send_frame(bytes::Bytes::copy_from_slice(f)).await.unwrap();
        }
    }
    latencies
}

/// p99 of a histogram over the window between two scrapes, as Prometheus'
/// `histogram_quantile` interpolates it.
fn histogram_p99(before: &Scrape, after: &Scrape, name: &str) -> String {
    let window = after.histogram(name).since(&before.histogram(name));
    match window.quantile(0.99) {
        Some(p99) => format!("{:.1} ms ({} samples)", p99 * 1000.0, window.count()),
        None => "n/a".into(),
    }
}

async fn scrape(hark: &common::Hark) -> Scrape {
    admin::scrape(hark.admin).await.expect("/metrics answers")
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)]
}

type AttackOutcome = (
    Vec<std::net::TcpStream>,
    Vec<Duration>,
    String,
    Vec<(&'static str, Option<u16>)>,
    Result<Option<u16>, ()>,
);

/// Every attack at once; returns the idle sockets (kept open until the caller
/// has checked that hark released them) and each attack's outcome.
async fn attack(addr: SocketAddr) -> AttackOutcome {
    // 5,000 TCP connections that never upgrade.
    let idle = join_all((0..5_000).map(|_| TcpStream::connect(addr))).await;
    let idle: Vec<std::net::TcpStream> =
        idle.into_iter().filter_map(Result::ok).filter_map(|t| t.into_std().ok()).collect();
    assert!(idle.len() >= 4_900, "only {} idle connections opened", idle.len());

    // Slowloris: a request head one byte at a time.
    let slow = (0..50).map(|_| async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        for b in b"GET /v4/listen?uid=slow HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
            if tcp.write_all(&[*b]).await.is_err() || started.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    });

    // A request head over the limit: 431.
    let big_head = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let head =
            format!("GET /v4/listen?uid=big HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        let _ = tcp.write_all(head.as_bytes()).await;
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer)).await;
        answer.lines().next().unwrap_or_default().to_owned()
    };

    // Malformed, unmasked, fragmented, invalid UTF-8, oversized, half-open, flood.
    let protocol = async {
        let mut out = Vec::new();
        let mut t = raw_upgrade(addr, "garbage").await;
        t.write_all(&[0xff; 64]).await.unwrap();
        out.push(("reserved opcode", close_code(&mut t, Duration::from_secs(5)).await));

        let mut t = raw_upgrade(addr, "unmasked").await;
        t.write_all(&[0x82, 0x03, 1, 2, 3]).await.unwrap();
        out.push(("unmasked frame", close_code(&mut t, Duration::from_secs(5)).await));

        let mut t = raw_upgrade(addr, "orphan").await;
        t.write_all(&frame(0x0, true, &[1, 2, 3, 4])).await.unwrap();
        out.push(("continuation without start", close_code(&mut t, Duration::from_secs(5)).await));

        let mut t = raw_upgrade(addr, "utf8").await;
        t.write_all(&frame(0x1, true, &[0x7b, 0xff, 0xfe, 0x7d])).await.unwrap();
        out.push(("invalid UTF-8 text", close_code(&mut t, Duration::from_secs(5)).await));

        let mut t = raw_upgrade(addr, "huge").await;
        t.write_all(&frame(0x2, true, &vec![0u8; 100_000])).await.unwrap_or(());
        out.push(("oversized frame", close_code(&mut t, Duration::from_secs(5)).await));

        let mut t = raw_upgrade(addr, "bigtext").await;
        t.write_all(&frame(0x1, true, "x".repeat(10_000).as_bytes())).await.unwrap();
        out.push(("oversized text", close_code(&mut t, Duration::from_secs(5)).await));

        // A valid fragmented message is fine: the session stays up until idle.
        let mut t = raw_upgrade(addr, "fragments").await;
        t.write_all(&frame(0x2, false, &[0u8; 1_000])).await.unwrap();
        t.write_all(&frame(0x0, false, &[0u8; 1_000])).await.unwrap();
        t.write_all(&frame(0x0, true, &[0u8; 1_000])).await.unwrap();
        out.push(("fragmented then idle", close_code(&mut t, Duration::from_secs(8)).await));

        // Half-open: upgraded, then never sends or reads again.
        let mut t = raw_upgrade(addr, "halfopen").await;
        out.push(("half-open", close_code(&mut t, Duration::from_secs(8)).await));
        out
    };

    let flood = async {
        let mut c = ListenClient::connect(addr, &format!("uid=flood&{QUERY}"), &[]).await.unwrap();
        // Up to 50,000 three-byte frames, as fast as the socket takes them.
        for _ in 0..20 {
            let burst: Vec<u8> = std::iter::repeat_n([1u8, 2, 3], 2_500).flatten().collect();
            if c.send_audio(&burst, 3).await.is_err() {
                break;
            }
        }
        c.wait_closed(Duration::from_secs(5)).await
    };

    let (slow, big, protocol, flood) = tokio::join!(join_all(slow), big_head, protocol, flood);
    (idle, slow, big, protocol, flood)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_named_outcomes_and_do_not_hurt_a_well_behaved_session() {
    // The attackers hold over 5,000 sockets.
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let stt = FakeStt::start(FakeSttConfig { words_per_result: 1, ..FakeSttConfig::default() })
        .await
        .unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let args = common::fake_upstream_args(
        &stt.url(),
        None,
        outbox.path(),
        &[
            "--handshake-timeout",
            "2s",
            "--inactivity-timeout",
            "3s",
            "--max-frame-bytes",
            "64KiB",
            // Below the frame limit, so the text limit is what a 10 KB text hits.
            "--max-text-bytes",
            "8KiB",
            "--upgrade-rate-per-ip",
            "0",
            "--max-sessions-per-user",
            "1000",
        ],
    );
    let hark = common::start(&args).await;
    let addr = hark.client;
    let pid = hark.pid();

    let mut good = ListenClient::connect(addr, &format!("uid=good&{QUERY}"), &[]).await.unwrap();
    assert!(
        good.wait_for(Duration::from_secs(10), |r| *r == Received::Status(ServiceStatus::Ready))
            .await
    );
    let hark_before = scrape(&hark).await;
    let baseline = measure(&mut good, 12).await;
    let hark_baseline = scrape(&hark).await;
    let fds_before = open_fds(pid);

    // --- the attack, all at once, while the good session keeps streaming ---
    // The attackers get a runtime (and OS thread) of their own: the well-behaved
    // client's latency must measure hark, not the test's own scheduler busy
    // opening 5,000 sockets on the same worker threads. That thread also runs at
    // the lowest priority: real attackers spend their own machines' CPU, not the
    // pod's, and on a 2-core box a flood generator at equal priority takes the
    // cores from the measuring client and the fake STT (one run in six read a
    // 45 ms client p99 while hark's own transcript latency stayed at 1 ms).
    let attack = std::thread::spawn(move || {
        lowest_priority_for_this_thread();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(attack(addr))
    });
    let attack = tokio::task::spawn_blocking(move || attack.join().unwrap());

    let during = measure(&mut good, 12).await;
    let hark_during = scrape(&hark).await;
    let (idle, slow, big, protocol, flood) = attack.await.unwrap();
    assert_eq!(flood, Ok(Some(1008)), "a flood of tiny frames is closed as a policy violation");

    // Named outcomes.
    assert!(big.contains("431"), "oversized head: {big:?}");
    let expected = [
        ("reserved opcode", 1002),
        ("unmasked frame", 1002),
        ("continuation without start", 1002),
        ("invalid UTF-8 text", 1007),
        ("oversized frame", 1009),
        ("oversized text", 1009),
        ("fragmented then idle", 1001),
        ("half-open", 1001),
    ];
    for ((name, code), (want_name, want)) in protocol.iter().zip(expected) {
        assert_eq!(*name, want_name);
        assert_eq!(*code, Some(want), "{name}");
    }
    for elapsed in slow {
        assert!(elapsed < Duration::from_secs(5), "a slowloris upgrade was held {elapsed:?}");
    }

    // The idle connections were timed out and released by hark.
    let mut released = false;
    for _ in 0..50 {
        if open_fds(pid) <= fds_before + 50 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(released, "hark still holds {} fds (before: {fds_before})", open_fds(pid));
    drop(idle);
    assert_eq!(http_get(hark.admin, "/healthz").await.0, 200);

    // The well-behaved session kept its latency.
    let (base, attacked) = (p99(baseline), p99(during));
    eprintln!("well-behaved transcript latency p99 (client view): {base:?} without attack, {attacked:?} during attack");
    let inside = |from, to| histogram_p99(from, to, "hark_transcript_latency_seconds");
    let lag = |from, to| histogram_p99(from, to, "hark_runtime_lag_seconds");
    eprintln!(
        "inside hark: transcript latency p99 {} → {}, runtime lag p99 {} → {}",
        inside(&hark_before, &hark_baseline),
        inside(&hark_baseline, &hark_during),
        lag(&hark_before, &hark_baseline),
        lag(&hark_baseline, &hark_during),
    );
    // Loopback latencies are a few ms and scheduling noise on a shared 2-core box is
    // of the same order, so the ratio is asserted above a 25 ms floor; the raw
    // figures are what the report quotes.
    assert!(
        attacked <= (base * 2).max(base + Duration::from_millis(25)),
        "{attacked:?} vs {base:?}"
    );
}
