//! The bench end to end, small: the real `bench` binary runs one workload through
//! real nginx and a real hark, and its JSON report must be well formed with
//! figures that are there (no performance thresholds). The test builds hark and
//! the loadtest binaries first with the cargo that built it (a no-op when fresh);
//! without nginx the bench fails, and so does this test.

use std::ffi::OsStr;
use std::process::Command;

use hark_loadtest::drill::procs;

#[tokio::test]
async fn bench_measures_both_relays_end_to_end() {
    let release = !cfg!(debug_assertions);
    let built = procs::cargo_build(OsStr::new(env!("CARGO")), &["hark", "hark-loadtest"], release)
        .await
        .expect("hark and the loadtest binaries build");
    let bench = built.get("bench").expect("cargo reports the bench binary");
    let bin_dir = built.get("hark").expect("cargo reports hark").parent().unwrap().to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("bench.json");
    let sessions = 20;
    let output = Command::new(bench)
        .args(["--no-build", "--sessions", &sessions.to_string(), "--window", "4s"])
        .args(["--settle", "1s", "--workload", "pcm16-20ms", "--runs", "1"])
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed ({}):\n{stderr}", output.status);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("hark / nginx"), "{table}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
            .expect("the report is JSON");
    assert_eq!(report["machine"]["nproc"].as_u64().map(|n| n > 0), Some(true), "{report:#}");
    assert!(report["command"].as_str().unwrap().contains("--workload pcm16-20ms"));
    let measurements = report["measurements"].as_array().expect("measurements");
    assert_eq!(measurements.len(), 2, "{report:#}");
    for m in measurements {
        let relay = m["relay"].as_str().unwrap();
        let num = |key: &str| m[key].as_f64().unwrap_or_else(|| panic!("{relay}: {key} in {m:#}"));
        assert_eq!(m["connected_min"], sessions, "{relay}: {m:#}");
        assert!(num("cpu_percent") > 0.0, "{relay}: {m:#}");
        assert!(num("cpu_ms_per_audio_mb") > 0.0, "{relay}: {m:#}");
        assert!(num("audio_mb") > 0.0, "{relay}: {m:#}");
        assert!(num("rss_idle_kib") > 0.0 && num("rss_steady_kib") > 0.0, "{relay}: {m:#}");
        assert!(m["kib_per_session"].is_number(), "{relay}: {m:#}");
        // Results came back through the relay (tunnelled fake-stt results or hark's).
        assert!(m["text_messages"].as_u64().unwrap() > 0, "{relay}: {m:#}");
        assert_eq!(m["disconnects"], 0, "{relay}: {m:#}");
    }
    let hark = measurements.iter().find(|m| m["relay"] == "hark").expect("a hark measurement");
    assert!(hark["words_in_window"].as_u64().unwrap() > 0, "{hark:#}");
    assert!(hark["latency_p99_ms"].is_number(), "{hark:#}");
    assert!(hark["runtime_lag_p99_ms"].is_number(), "{hark:#}");
    let nginx = measurements.iter().find(|m| m["relay"] == "nginx").expect("an nginx measurement");
    assert!(nginx["latency_p99_ms"].is_null(), "no latency through a plain tunnel: {nginx:#}");
    let comparisons = report["comparisons"].as_array().expect("comparisons");
    assert_eq!(comparisons.len(), 1, "{report:#}");
    assert!(comparisons[0]["cpu_ratio"].as_f64().unwrap() > 0.0, "{report:#}");
}
