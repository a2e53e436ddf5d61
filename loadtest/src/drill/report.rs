//! The drill's report: one JSON document with everything measured, and the same
//! as Markdown for people.

use std::fmt::Write as _;

use serde::Serialize;

use super::hark_metrics::Transition;
use super::judge::{Figures, Target, Verdict};
use super::scenario::Plan;
use super::timeline::Row;
use crate::latency::LatencySummary;
use crate::swarm::SwarmResult;

/// Everything a drill run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The command that reproduces the run.
    pub command: String,
    /// Unix ms the swarm started (t = 0).
    pub started_unix_ms: u64,
    /// The plan.
    pub plan: Plan,
    /// hark flags given after `--` (on top of the plan's).
    pub hark_extra_args: Vec<String>,
    /// Whether every judged target passed.
    pub passed: bool,
    /// The targets.
    pub targets: Vec<Target>,
    /// Headline figures.
    pub figures: Figures,
    /// Breaker transitions: (t in seconds since the start, state entered).
    pub breaker: Vec<(f64, String)>,
    /// Dials hark made during the fault, per session.
    pub dials_per_session: f64,
    /// fake-pusher's final counters (subset).
    pub pusher: serde_json::Value,
    /// The swarm's result.
    pub swarm: Option<SwarmResult>,
    /// One row per second.
    pub timeline: Vec<Row>,
    /// Problems met while running (a scrape that failed, …).
    pub notes: Vec<String>,
}

impl Report {
    /// Breaker transitions relative to `started_unix_ms`.
    pub fn breaker_rows(transitions: &[Transition], started_unix_ms: u64) -> Vec<(f64, String)> {
        transitions
            .iter()
            .map(|t| ((t.unix_ms as f64 - started_unix_ms as f64) / 1000.0, t.to.clone()))
            .collect()
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let p = &self.plan;
        let mut md = String::new();
        let variant = if p.quick { " (quick)" } else { "" };
        let _ = writeln!(md, "# Drill report: `{}`{variant}\n", p.scenario);
        let verdict = if self.passed {
            "**PASS** — every target met"
        } else {
            "**FAIL** — see ❌ below"
        };
        let _ = writeln!(md, "{verdict}\n");
        let _ = writeln!(md, "- Scenario: {}", p.description);
        let _ = writeln!(
            md,
            "- Load: {} sessions ramping at {}/s, {} ms frames of 8 kHz PCM, conversations \
             ending after {} s without transcript; fake-stt answers {} ms after a word's audio",
            p.sessions,
            p.ramp_rate,
            p.frame.as_millis(),
            p.conversation_timeout.as_secs(),
            p.stt_latency.as_millis()
        );
        let _ = writeln!(
            md,
            "- Timeline: fault at t = {:.0} s, healed at t = {:.0} s, clients stream until t = {:.0} s",
            p.fault_at.as_secs_f64(),
            p.heal_at.as_secs_f64(),
            p.run_for.as_secs_f64()
        );
        let mut flags: Vec<String> =
            p.hark_flags.iter().map(|(k, v)| format!("--{k} {v}")).collect();
        flags.extend(self.hark_extra_args.iter().cloned());
        let _ = writeln!(md, "- hark: `{}`", flags.join(" "));
        let _ = writeln!(md, "- Reproduce: `{}`\n", self.command);

        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| Target | Threshold | Measured | Result |");
        let _ = writeln!(md, "|---|---|---|---|");
        for t in &self.targets {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                cell(&t.name),
                cell(&t.threshold),
                cell(&t.measured),
                t.verdict.label()
            );
        }

        let f = &self.figures;
        let _ = writeln!(md, "\n## Figures\n");
        let _ = writeln!(md, "| | |");
        let _ = writeln!(md, "|---|---|");
        let opt = |v: Option<f64>, unit: &str| v.map_or("—".into(), |v| format!("{v:.1}{unit}"));
        let rows: Vec<(String, String)> = vec![
            ("Breaker opened after the fault".into(), opt(f.breaker_open_after_s, " s")),
            (
                "Dials during the fault".into(),
                format!(
                    "{} ({:.2} per session; {:.1} per session-hour)",
                    f.dials_during_fault,
                    self.dials_per_session,
                    per_hour(
                        self.dials_per_session,
                        p.heal_at.as_secs_f64() - p.fault_at.as_secs_f64()
                    )
                ),
            ),
            (
                "Dials while open / time open".into(),
                format!("{} in {:.0} s", f.dials_while_open, f.open_seconds),
            ),
            ("Heal → breaker closed (unjudged)".into(), opt(f.heal_to_close_s, " s")),
            ("Breaker closed → all sessions back".into(), opt(f.recovery_s, " s")),
            ("Peak reconnects per second".into(), opt(f.peak_reconnect_rate, "")),
            ("Latency before (p50 / p99)".into(), latency(&f.latency_before)),
            ("Latency during (p50 / p99)".into(), latency(&f.latency_during)),
            ("Latency after (p50 / p99)".into(), latency(&f.latency_after)),
            (
                "Conversations created / lost / duplicated".into(),
                format!(
                    "{} / {} / {}",
                    f.conversations_created, f.conversations_lost, f.duplicates
                ),
            ),
            ("Client disconnects (whole run)".into(), f.disconnects.to_string()),
            ("Runtime lag p99 (whole run)".into(), opt(f.lag_p99_ms, " ms")),
        ];
        for (k, v) in rows {
            let _ = writeln!(md, "| {k} | {v} |");
        }
        if let Some(s) = &self.swarm {
            let _ = writeln!(
                md,
                "| Swarm | {} sessions opened, {} reconnects, {} words sent / {} matched / {} lost / {} unmatched, service_status {:?}, processing_status {:?} |",
                s.sessions_opened,
                s.reconnects,
                s.words.sent,
                s.words.matched,
                s.words.lost,
                s.words.unmatched,
                s.statuses,
                s.processing
            );
        }
        if !self.breaker.is_empty() {
            let _ = writeln!(md, "\n## Breaker transitions\n");
            let _ = writeln!(md, "| t (s) | to |");
            let _ = writeln!(md, "|---|---|");
            for (t, to) in &self.breaker {
                let _ = writeln!(md, "| {t:.1} | {to} |");
            }
        }
        let _ = writeln!(md, "\n## How it is measured\n");
        for line in METHOD {
            let _ = writeln!(md, "- {line}");
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "\n## Notes\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        let _ = writeln!(md, "\n![timeline](drill-timeline.svg)");
        md
    }

    /// Whether every judged target passed.
    pub fn all_pass(targets: &[Target]) -> bool {
        targets.iter().all(|t| t.verdict != Verdict::Fail)
    }
}

const METHOD: &[&str] = &[
    "t = 0 is the swarm's start; every process runs on loopback; hark is scraped every second.",
    "Breaker transitions come from hark's /metrics: between two scrapes, the rise of \
     pusher_circuit_breaker_transitions_total{to} says how many transitions into each state \
     happened, pusher_circuit_breaker_last_transition_timestamp_seconds{to} when the latest did \
     (hark's clock, sub-millisecond). A cooldown of a second or more allows one per state per \
     scrape; more is reported in the notes.",
    "Dials are hark's own count, pusher_connect_attempts_total over every result, per 1 s \
     scrape interval: sessions' dials, the breaker's probe and outbox replays, including dials \
     to a closed port (`refuse`, `flapping`) that never reach pusher.",
    "The dial limit is judged over every breaker-cooldown-long window while the breaker is open \
     or half-open, counting the scrape intervals that lie wholly inside that span, from one \
     pusher-connect-timeout after it began: hark counts a dial when it ends, so an interval \
     holding the trip or the close, or the stragglers of dials begun before the trip, cannot \
     say which of its dials began while open, and is not counted. If the breaker never opened, \
     from the moment it should have (fault + ping-timeout + 5 s) to the heal.",
    "Latency is per word, from the client's view: the swarm runs fake-stt's recogniser over the \
     audio it sends, and latency = arrival of the segment holding word k − the instant the last \
     byte of the chunk that became word k was sent. Before = from the end of the ramp-up to the \
     fault; during = fault to heal (STT blip: to heal + 10 s); after = the rest.",
    "Recovery is timed from the breaker's first close after the heal — the first moment hark can \
     know pusher is back (up to one cooldown after the heal) — until pusher_sessions_connected \
     reaches hark_sessions_active; the reconnect rate is the largest rise of \
     pusher_sessions_connected between two consecutive 1 s scrapes in that span, divided by \
     their gap when a late scrape made it longer than 1 s (a gap measured shorter is the \
     scrape's own latency jitter and counts as 1 s).",
    "Conversations: lost = ids clients were told were created (via pusher or fallback) that \
     fake-pusher never processed after the outbox drained, plus talk stretches with transcript \
     that were never announced; duplicates = fake-pusher 104s for an id already processed.",
    "Runtime lag: p99 of hark_runtime_lag_seconds from bucket deltas, over each 10 s window.",
    "Disconnects: any close sent by hark, or a socket that died, from the fault on.",
];

fn per_hour(per_session: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        per_session * 3600.0 / seconds
    } else {
        0.0
    }
}

fn latency(s: &LatencySummary) -> String {
    match (s.p50_ms, s.p99_ms) {
        (Some(p50), Some(p99)) => format!("{p50:.0} / {p99:.0} ms ({} words)", s.count),
        _ => "—".into(),
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::scenario::Scenario;

    fn report(verdict: Verdict) -> Report {
        Report {
            command: "drill --quick".into(),
            started_unix_ms: 1000,
            plan: Plan::new(Scenario::Incident, true),
            hark_extra_args: vec!["--reconnect-max".into(), "1s".into()],
            passed: verdict == Verdict::Pass,
            targets: vec![Target {
                id: "latency",
                name: "Latency | p99".into(),
                threshold: "≤ 1.5 ×".into(),
                measured: "12 ms".into(),
                value: Some(1.0),
                verdict,
            }],
            figures: Figures { breaker_open_after_s: Some(5.5), ..Figures::default() },
            breaker: Report::breaker_rows(&[Transition { unix_ms: 6500, to: "open".into() }], 1000),
            dials_per_session: 2.0,
            pusher: serde_json::json!({}),
            swarm: None,
            timeline: vec![],
            notes: vec!["a scrape failed".into()],
        }
    }

    #[test]
    fn markdown_has_verdict_targets_and_command() {
        let md = report(Verdict::Pass).markdown();
        assert!(md.starts_with("# Drill report: `incident` (quick)"));
        assert!(md.contains("**PASS**"));
        assert!(md.contains("| Latency \\| p99 | ≤ 1.5 × | 12 ms | ✅ pass |"), "{md}");
        assert!(md.contains("`drill --quick`"));
        assert!(md.contains("--pusher-ping-timeout 4s"));
        assert!(md.contains("--reconnect-max 1s"));
        assert!(md.contains("| 5.5 | open |"));
        assert!(md.contains("a scrape failed"));
        let failed = report(Verdict::Fail);
        assert!(failed.markdown().contains("**FAIL**"));
        assert!(!Report::all_pass(&failed.targets));
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["targets"][0]["verdict"], "fail");
        assert_eq!(json["plan"]["scenario"], "incident");
        assert_eq!(json["breaker"][0][0], 5.5);
    }
}
