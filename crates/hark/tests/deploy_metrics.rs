//! Every metric name the alert rules, recording rules, adapter rule and dashboard
//! in `deploy/` use is exported by a freshly started `hark` with every optional
//! engine configured.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use hark_fakes::admin;

fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["hark_", "pusher_"] {
        let mut from = 0;
        while let Some(found) = text[from..].find(prefix) {
            let start = from + found;
            let boundary = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric()
                    || bytes[start - 1] == b'_'
                    || bytes[start - 1] == b':');
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()))
                .map_or(text.len(), |e| start + e);
            if boundary {
                let name = &text[start..end];
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                names.insert(name.to_owned());
            }
            from = end.max(start + 1);
        }
    }
    names
}

fn deploy_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            deploy_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_used_in_deploy_is_exported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut files = Vec::new();
    for sub in ["prometheus", "grafana", "k8s/prometheus-adapter"] {
        deploy_files(&root.join(sub), &mut files);
    }
    let mut used = BTreeSet::new();
    for file in &files {
        used.extend(names_in(&std::fs::read_to_string(file).unwrap()));
    }
    assert!(used.len() >= 15, "found the metric names in deploy/: {used:?}");

    // Every engine configured (the store series exist only where a store is):
    // a real Postgres started by the test.
    let pg = hark_store::testing::PgServer::start();
    let database = pg.url();
    let outbox = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--database-url",
        database.as_str(),
        "--stt",
        "deepgram",
        "--stt-url",
        "ws://127.0.0.1:9/v1/listen",
        "--pusher-url",
        "ws://127.0.0.1:9",
        "--outbox-dir",
        outbox.path().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let hark = common::start(&args).await;
    let exported = admin::scrape(hark.admin).await.expect("/metrics answers").names();
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used in deploy/ but not exported: {missing:?}\nexported: {exported:?}"
    );
}
