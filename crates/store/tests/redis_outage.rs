//! Redis stopped under a live store: calls fail within their budget, the breaker
//! opens, `hark_store_up{store="redis"}` drops to 0; Redis restarted (empty, no
//! scripts): the store comes back, reloads its scripts on `NOSCRIPT`, and the
//! gauge returns to 1. One test in its own binary, because it reads the
//! process-wide metrics recorder.

mod common;

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use hark_store::quota::QuotaWindow;
use hark_store::testing::RedisServer;
use hark_store::{
    BudgetConfig, QuotaStore, RedisConfig, RedisStore, SessionCap, StoreError, WallClock,
};
use metrics_exporter_prometheus::PrometheusBuilder;

fn gauge(rendered: &str, series: &str) -> Option<f64> {
    rendered.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

fn counter(rendered: &str, labels: &str) -> u64 {
    let series = format!("hark_store_calls_total{{{labels}}}");
    gauge(rendered, &series).map_or(0, |v| v as u64)
}

#[tokio::test]
async fn redis_outage_opens_the_breaker_and_recovery_reloads_the_scripts() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder).expect("first recorder in this binary");
    hark_store::metrics::register(hark_store::StoreKind::Redis);
    let zero = r#"hark_store_calls_total{store="redis",op="quota_renew",result="timeout"} 0"#;
    assert!(metrics.render().contains(zero), "registered at zero: {}", metrics.render());

    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(250);
    let budget = BudgetConfig {
        timeout,
        failure_threshold: NonZeroU32::new(3).unwrap(),
        cooldown: Duration::from_millis(500),
    };
    let store = RedisStore::new(RedisConfig { budget, ..RedisConfig::new(server.url()) }).unwrap();
    let window = QuotaWindow::DAY.containing(WallClock::system().now_ms());
    let limit = Duration::from_secs(3600);
    let chunk = Duration::from_secs(30);
    let up = r#"hark_store_up{store="redis"}"#;

    assert_eq!(gauge(&metrics.render(), up), Some(0.0), "unknown until the first answer");
    store.lease("u1", window, limit, chunk).await.unwrap();
    assert!(store.budget().is_up());
    assert_eq!(gauge(&metrics.render(), up), Some(1.0));

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let error = store.lease("u1", window, limit, chunk).await.unwrap_err();
        assert!(error.is_outage(), "{error}");
        assert!(
            // The budget plus slack for a loaded CI machine's scheduler; a call
            // that ignored its budget would hang on the stopped server's port.
            started.elapsed() < timeout * 2,
            "within its budget: {:?}",
            started.elapsed()
        );
    }
    assert!(!store.budget().is_up());
    assert_eq!(gauge(&metrics.render(), up), Some(0.0), "running on local state");
    // Open: refused on the spot, and the counters show no call reached Redis.
    let acquire = |result: &str| {
        counter(
            &metrics.render(),
            &format!(r#"store="redis",op="session_acquire",result="{result}""#),
        )
    };
    let attempted = || acquire("ok") + acquire("error") + acquire("timeout");
    let (attempted_before, rejected_before) = (attempted(), acquire("rejected"));
    let started = Instant::now();
    let error = store.acquire_session("u1", "s1", 2, Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(error, StoreError::Rejected { .. }), "{error}");
    assert!(started.elapsed() < timeout, "refused without waiting: {:?}", started.elapsed());
    assert_eq!(attempted(), attempted_before, "nothing attempted while open");
    assert_eq!(acquire("rejected"), rejected_before + 1);

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut trials = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(550)).await;
        trials += 1;
        if store.lease("u1", window, limit, chunk).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "redis did not come back after {trials} trials");
    }
    eprintln!("redis back after {trials} trial(s)");
    assert!(store.budget().is_up());
    assert_eq!(gauge(&metrics.render(), up), Some(1.0));
    let stats = server.command_stats();
    assert_eq!(
        stats.get("script|load"),
        Some(&1),
        "NOSCRIPT answered by loading the script: {stats:?}"
    );
    // Other scripts load on their first use too.
    store.acquire_session("u1", "s1", 2, Duration::from_secs(60)).await.unwrap();
    assert_eq!(server.command_stats().get("script|load"), Some(&2));

    let rendered = metrics.render();
    assert!(counter(&rendered, r#"store="redis",op="quota_lease",result="ok""#) >= 2, "{rendered}");
    let failed = counter(&rendered, r#"store="redis",op="quota_lease",result="error""#)
        + counter(&rendered, r#"store="redis",op="quota_lease",result="timeout""#);
    assert!(failed >= 3, "{rendered}");
    assert!(
        counter(&rendered, r#"store="redis",op="session_acquire",result="rejected""#) >= 1,
        "{rendered}"
    );
}
