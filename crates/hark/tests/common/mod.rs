//! Runs the real `hark` binary as a child process on loopback ports.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use hark_fakes::admin;
pub use hark_fakes::process::HarkProcess as Hark;

/// Starts this package's `hark` binary (built by cargo for these tests) with
/// `args`, on loopback `:0` listeners, and waits for it to listen.
pub async fn start(args: &[String]) -> Hark {
    Hark::start(Path::new(env!("CARGO_BIN_EXE_hark")), args).await
}

/// Arguments for a `hark` wired to a fake STT (and optionally a fake pusher), with
/// its outbox in `outbox`, followed by `extra`.
pub fn fake_upstream_args(
    stt_url: &str,
    pusher_url: Option<&str>,
    outbox: &std::path::Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args = vec!["--stt", "deepgram", "--stt-url", stt_url, "--stt-api-key", "k"];
    if let Some(url) = pusher_url {
        args.extend(["--pusher-url", url]);
    }
    args.extend(["--outbox-dir", outbox.to_str().expect("UTF-8 temp path")]);
    args.extend(extra);
    args.into_iter().map(str::to_owned).collect()
}

/// `GET path` on hark's admin port: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin::get(addr, path).await.expect("the admin port answers in time")
}

/// Open file descriptors of a process (sockets included), from `/proc`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// One series of hark's `/metrics`, written as Prometheus prints it
/// (`name{label="value",…}`); 0 when absent.
pub async fn metric(pod: &Hark, series: &str) -> f64 {
    let (_, body) = http_get(pod.admin, "/metrics").await;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    let labels: Vec<(&str, &str)> = labels
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        .collect();
    hark_fakes::prom::Scrape::parse(&body).get(name, &labels)
}
