//! The command line contract (design §8): bad values exit 64 with one line naming
//! the flag, before anything is bound; `--help` documents every flag; and every flag
//! of `--help` is documented in docs/configuration.md.

use std::process::Command;

fn hark(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hark"));
    command.args(args).env_remove("DEEPGRAM_API_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("hark runs")
}

fn help_flags() -> Vec<String> {
    let out = hark(&["--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut flags: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| format!("--{}", l.split([' ', '<', ',']).next().unwrap()))
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn bad_values_exit_64_with_one_line_naming_the_flag() {
    for (args, env, flag) in [
        (vec!["--breaker-window", "soon"], vec![], "--breaker-window"),
        (vec!["--max-sessions", "0"], vec![], "--max-sessions"),
        (vec!["--reconnect-base", "2s", "--reconnect-max", "1s"], vec![], "--reconnect-max"),
        (vec!["--pusher-ping-interval", "30s"], vec![], "--pusher-ping-timeout"),
        (vec!["--pusher-url", "http://pusher"], vec![], "--pusher-url"),
        (vec!["--listen", "0.0.0.0:8080"], vec![], "--auth none"),
        (vec!["--auth", "jwt"], vec![], "--auth jwt"),
        (
            vec!["--auth", "jwt", "--jwks-file", "/tmp/jwks.json"],
            vec![("HARK_JWKS_URL", "https://idp.example/jwks")],
            "--jwks-url",
        ),
        (vec!["--auth", "jwt", "--jwks-url", "ftp://idp.example/jwks"], vec![], "--jwks-url"),
        (vec!["--outbox-max-bytes", "lots"], vec![], "--outbox-max-bytes"),
        (vec![], vec![("HARK_BREAKER_COOLDOWN", "-5s")], "--breaker-cooldown"),
        (vec![], vec![("HARK_RECOVERY_RATE", "0")], "--recovery-rate"),
    ] {
        let out = hark(&args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: one line, got {stderr:?}");
        assert!(stderr.contains(flag), "{args:?}: {stderr:?} should name {flag}");
    }
}

#[test]
fn help_documents_every_flag_with_its_default_and_env() {
    let out = hark(&["--help"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    let flags = help_flags();
    for required in [
        "--listen",
        "--admin-listen",
        "--stt-url",
        "--stt-api-key",
        "--stt-model",
        "--pusher-url",
        "--outbox-dir",
        "--outbox-max-bytes",
        "--fallback-url",
        "--breaker-failure-threshold",
        "--breaker-window",
        "--breaker-cooldown",
        "--retry-after-max",
        "--reconnect-max-attempts",
        "--reconnect-base",
        "--reconnect-max",
        "--degraded-probe-interval",
        "--recovery-rate",
        "--pusher-connect-timeout",
        "--pusher-ping-interval",
        "--pusher-ping-timeout",
        "--pusher-heartbeat-interval",
        "--inactivity-timeout",
        "--max-sessions",
        "--max-sessions-per-user",
        "--max-frame-bytes",
        "--max-conversation-segments",
        "--drain-timeout",
        "--auth",
        "--jwt-secret-file",
        "--jwks-file",
        "--jwt-audience",
        "--jwt-issuer",
        "--allow-anonymous",
        "--jwks-url",
        "--plan-claim",
    ] {
        assert!(flags.iter().any(|f| f == required), "--help lacks {required} (design §8)");
    }
    assert!(text.contains("[default: 20s]") && text.contains("[default: 60s]"));
    assert!(text.contains("[env: HARK_BREAKER_COOLDOWN"));
}

#[test]
fn every_flag_is_in_the_configuration_guide() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .expect("docs/configuration.md exists");
    let missing: Vec<String> =
        help_flags().into_iter().filter(|f| !guide.contains(f.as_str())).collect();
    assert!(missing.is_empty(), "flags missing from docs/configuration.md: {missing:?}");
}

#[test]
fn an_unreachable_jwks_url_fails_the_start_with_one_line() {
    // Nothing listens on port 1 of loopback: every attempt is refused at once.
    let out = hark(
        &[
            "--auth",
            "jwt",
            "--jwks-url",
            "http://127.0.0.1:1/jwks",
            "--stt-url",
            "ws://127.0.0.1:9/v1/listen",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[("RUST_LOG", "off")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line, got {stderr:?}");
    assert!(stderr.contains("cannot fetch the JWKS from http://127.0.0.1:1/jwks"), "{stderr:?}");
}

/// Built without the embedded engine, `--stt local` is refused at start-up with a
/// reason that says how to get it, before a socket is bound.
#[cfg(not(feature = "local-stt"))]
#[test]
fn stt_local_without_the_engine_is_refused_with_how_to_build_it() {
    let outbox = std::env::temp_dir().join(format!("hark-cli-test-{}", std::process::id()));
    let out = hark(
        &["--stt", "local", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &[("HARK_OUTBOX_DIR", outbox.to_str().unwrap())],
    );
    let _ = std::fs::remove_dir_all(&outbox);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("built without the local engine"), "{stderr}");
    assert!(stderr.contains("--features local-stt"), "{stderr}");
}
