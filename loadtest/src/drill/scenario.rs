//! The drill's scenarios: what breaks when, for how long, and the hark timings and
//! load each runs with, in full and `--quick` form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// A named scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The original incident: pusher stops answering pings (`stall`).
    Incident,
    /// Pusher's port closes (ECONNREFUSED); open links drop.
    Refuse,
    /// Open links drop; new connections are accepted and never answered.
    Blackhole,
    /// Open links drop; upgrades get 429 with `Retry-After`.
    #[serde(rename = "http-429")]
    Http429,
    /// Pusher alternates refuse/up.
    Flapping,
    /// The STT provider closes every stream with 1011 for a few seconds.
    SttBlip,
    /// Two hark pods sharing one Postgres: pusher refuses, pod A is killed
    /// (SIGKILL, outbox directory deleted) mid-outage, pod B delivers everything.
    Fleet,
}

impl Scenario {
    /// Every scenario, in the order `--scenario all` runs them.
    pub const ALL: [Scenario; 7] = [
        Scenario::Incident,
        Scenario::Refuse,
        Scenario::Blackhole,
        Scenario::Http429,
        Scenario::Flapping,
        Scenario::SttBlip,
        Scenario::Fleet,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Incident => "incident",
            Scenario::Refuse => "refuse",
            Scenario::Blackhole => "blackhole",
            Scenario::Http429 => "http-429",
            Scenario::Flapping => "flapping",
            Scenario::SttBlip => "stt-blip",
            Scenario::Fleet => "fleet",
        }
    }

    /// Whether the fault is pusher's (the breaker and recovery targets apply).
    pub fn breaks_pusher(self) -> bool {
        self != Scenario::SttBlip
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL.into_iter().find(|sc| sc.name() == s).ok_or_else(|| {
            format!(
                "unknown scenario {s:?}; expected one of: {}",
                Scenario::ALL.map(Scenario::name).join(", ")
            )
        })
    }
}

/// One step of the fault schedule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// `POST /mode` on fake-pusher with this JSON body.
    PusherMode {
        /// The body, e.g. `{"mode":"stall"}`.
        spec: serde_json::Value,
    },
    /// `POST /drop-links` on fake-pusher.
    DropLinks,
    /// `POST /fault/{name}` on fake-stt.
    SttFault {
        /// `none`, `close-1011`, `stall`, `refuse`.
        name: String,
    },
    /// `fleet`: SIGKILL this hark pod and delete its outbox directory (disk and
    /// all), after counting the records in it.
    KillPod {
        /// The pod's name (`a`).
        pod: String,
    },
}

impl Action {
    fn mode(mode: &str) -> Action {
        Action::PusherMode { spec: serde_json::json!({ "mode": mode }) }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::PusherMode { spec } => write!(f, "pusher mode {spec}"),
            Action::DropLinks => f.write_str("pusher drops every open link"),
            Action::SttFault { name } => write!(f, "stt fault {name}"),
            Action::KillPod { pod } => {
                write!(f, "pod {pod} killed (SIGKILL) and its outbox directory deleted")
            }
        }
    }
}

/// Everything a drill run needs to know about its scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// The `--quick` variant.
    pub quick: bool,
    /// One line for the report.
    pub description: String,
    /// Swarm clients (hark sessions).
    pub sessions: usize,
    /// Clients started per second.
    pub ramp_rate: f64,
    /// Audio per client frame.
    #[serde(with = "secs")]
    pub frame: Duration,
    /// `conversation_timeout` the clients ask for.
    #[serde(with = "secs")]
    pub conversation_timeout: Duration,
    /// Mean talk stretch of the generated script.
    #[serde(with = "secs")]
    pub talk: Duration,
    /// Pause between stretches (longer than the conversation timeout).
    #[serde(with = "secs")]
    pub pause: Duration,
    /// Time the swarm waits at the end for open conversations beyond the timeout.
    #[serde(with = "secs")]
    pub settle: Duration,
    /// fake-stt's delay from a word's audio to its result (a hosted STT's latency).
    #[serde(with = "secs")]
    pub stt_latency: Duration,
    /// When the fault begins (t = 0 is the swarm's start).
    #[serde(with = "secs")]
    pub fault_at: Duration,
    /// When the last fault action heals it.
    #[serde(with = "secs")]
    pub heal_at: Duration,
    /// How long clients stream.
    #[serde(with = "secs")]
    pub run_for: Duration,
    /// After the run, how long to wait for hark's outbox to drain.
    #[serde(with = "secs")]
    pub drain_wait: Duration,
    /// The fault schedule.
    pub actions: Vec<(f64, Action)>,
    /// hark flags the drill sets (as `HARK_*` environment variables, so flags given
    /// after `--` win), name without dashes → value.
    pub hark_flags: Vec<(String, String)>,
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// hark's timing flags at their defaults (design §6), set explicitly so the drill
/// knows what it judges against.
const FULL_HARK: &[(&str, &str)] = &[
    ("pusher-ping-interval", "10s"),
    ("pusher-ping-timeout", "20s"),
    ("pusher-connect-timeout", "3s"),
    ("pusher-heartbeat-interval", "20s"),
    ("breaker-failure-threshold", "20"),
    ("breaker-window", "30s"),
    ("breaker-cooldown", "60s"),
    ("reconnect-max-attempts", "6"),
    ("reconnect-base", "1s"),
    ("reconnect-max", "60s"),
    ("degraded-probe-interval", "60s"),
    ("recovery-rate", "50"),
];

/// The same, scaled for a drill that fits in a minute: pings, cooldown and probe
/// interval 1/5-1/6 of the defaults, a third of the connect timeout, and a recovery
/// rate low enough that 50 sessions take 2.5 s to return (so the rate is tested),
/// yet high enough that the 1.1× tolerance is two links, not one: at 10/s a single
/// handshake finishing a few ms late put 11 in one scrape and failed a sound run.
const QUICK_HARK: &[(&str, &str)] = &[
    ("pusher-ping-interval", "2s"),
    ("pusher-ping-timeout", "4s"),
    ("pusher-connect-timeout", "1s"),
    ("pusher-heartbeat-interval", "4s"),
    ("breaker-failure-threshold", "20"),
    ("breaker-window", "10s"),
    ("breaker-cooldown", "10s"),
    ("reconnect-max-attempts", "6"),
    ("reconnect-base", "1s"),
    ("reconnect-max", "10s"),
    ("degraded-probe-interval", "10s"),
    ("recovery-rate", "20"),
];

impl Plan {
    /// Heals the `incident` stall without a restart: pusher resumes reading the
    /// links it stalled, backlog included, although hark abandoned them long ago.
    /// 104s in that backlog are processed with nobody left to ack, and hark replays
    /// the same conversations from its outbox: duplicates the idempotency key must
    /// absorb (design §4).
    pub fn resume_stalled(&mut self) {
        if self.scenario == Scenario::Incident {
            self.actions.retain(|(_, a)| *a != Action::DropLinks);
            self.description = "pusher stops answering (stall), then resumes reading every \
                                link it stalled, backlog included"
                .to_owned();
        }
    }

    /// The plan for `scenario`, full or quick.
    pub fn new(scenario: Scenario, quick: bool) -> Plan {
        let s = |secs: f64| Duration::from_secs_f64(secs);
        let (fault_at, fault_for, run_for) =
            if quick { (8.0, 20.0, 45.0) } else { (30.0, 120.0, 240.0) };
        let heal = fault_at + fault_for;
        let mut actions = Vec::new();
        let mut heal_at = heal;
        let description;
        match scenario {
            Scenario::Incident => {
                description = "pusher stops answering (stall: pings, frames and new handshakes \
                               unanswered), then heals by restarting (links it left unread are \
                               dropped with their backlog)"
                    .to_owned();
                actions.push((fault_at, Action::mode("stall")));
                // A stalled pusher is healed by a restart: the links it stopped reading
                // die with what they held. (`Plan::resume_stalled` keeps them instead.)
                actions.push((heal, Action::DropLinks));
                actions.push((heal, Action::mode("up")));
            }
            Scenario::Refuse => {
                description =
                    "pusher's port closes (ECONNREFUSED; open links drop), then reopens".to_owned();
                actions.push((fault_at, Action::mode("refuse")));
                actions.push((heal, Action::mode("up")));
            }
            Scenario::Blackhole => {
                description =
                    "open links drop; new connections are accepted and never answered".to_owned();
                actions.push((fault_at, Action::mode("blackhole")));
                actions.push((fault_at, Action::DropLinks));
                actions.push((heal, Action::mode("up")));
            }
            Scenario::Http429 => {
                let retry_after = if quick { "12" } else { "90" };
                description = format!(
                    "open links drop; every upgrade answered 429 with Retry-After: {retry_after} \
                     (longer than the breaker cooldown)"
                );
                actions.push((
                    fault_at,
                    Action::PusherMode {
                        spec: serde_json::json!({ "mode": "http-429", "retry_after": retry_after }),
                    },
                ));
                actions.push((fault_at, Action::DropLinks));
                actions.push((heal, Action::mode("up")));
            }
            Scenario::Flapping => {
                let step = if quick { 2.5 } else { 10.0 };
                description = format!("pusher alternates refuse/up every {step} s, then stays up");
                let mut t = fault_at;
                while t + step < heal {
                    actions.push((t, Action::mode("refuse")));
                    actions.push((t + step, Action::mode("up")));
                    heal_at = t + step;
                    t += 2.0 * step;
                }
            }
            Scenario::SttBlip => {
                let blip = if quick { 3.0 } else { 5.0 };
                description = format!(
                    "the STT provider closes every stream with 1011 for {blip} s (pusher stays up)"
                );
                actions.push((fault_at, Action::SttFault { name: "close-1011".into() }));
                actions.push((fault_at + blip, Action::SttFault { name: "none".into() }));
                heal_at = fault_at + blip;
            }
            Scenario::Fleet => {
                // Quick: 8 s of outage on both pods before the kill, so conversations
                // end on pod A and are acknowledged via fallback; 12 s more after it.
                let kill = if quick { 16.0 } else { 90.0 };
                description = "two hark pods share one Postgres; pusher's port closes, \
                               conversations end via fallback, pod A is killed with SIGKILL \
                               and its outbox directory deleted mid-outage, pusher reopens and \
                               pod B delivers everything"
                    .to_owned();
                actions.push((fault_at, Action::mode("refuse")));
                actions.push((kill, Action::KillPod { pod: "a".into() }));
                actions.push((heal, Action::mode("up")));
            }
        }
        let hark = if quick { QUICK_HARK } else { FULL_HARK };
        let mut hark_flags: Vec<(String, String)> =
            hark.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        if scenario == Scenario::Fleet {
            // A claim pod A held when it died comes back after the lease: keep it
            // inside the quick drain wait, yet above one delivery (10 s).
            let lease = if quick { "15s" } else { "60s" };
            hark_flags.push(("outbox-claim-lease".into(), lease.into()));
        }
        Plan {
            scenario,
            quick,
            description,
            sessions: if quick { 50 } else { 300 },
            ramp_rate: 25.0,
            // Whole-chunk frames keep fake-stt's chunk grid aligned when an STT
            // stream restarts mid-session (audio resumes on a frame boundary).
            frame: if scenario == Scenario::SttBlip { s(0.5) } else { s(0.1) },
            conversation_timeout: s(if quick { 3.0 } else { 8.0 }),
            talk: s(if quick { 6.0 } else { 20.0 }),
            pause: s(if quick { 4.0 } else { 10.0 }),
            settle: s(if quick { 2.0 } else { 10.0 }),
            stt_latency: s(0.3),
            fault_at: s(fault_at),
            heal_at: s(heal_at),
            run_for: s(run_for),
            drain_wait: s(match (scenario, quick) {
                (Scenario::Fleet, true) => 30.0,
                (_, true) => 15.0,
                (_, false) => 180.0,
            }),
            actions,
            hark_flags,
        }
    }

    /// A hark flag's value as the drill sets it, overridden by `extra` (the args
    /// after `--`, `--flag value` or `--flag=value`).
    pub fn hark_flag(&self, name: &str, extra: &[String]) -> Option<String> {
        let long = format!("--{name}");
        let mut found = None;
        let mut args = extra.iter();
        while let Some(arg) = args.next() {
            if *arg == long {
                found = args.next().cloned();
            } else if let Some(value) = arg.strip_prefix(&format!("{long}=")) {
                found = Some(value.to_owned());
            }
        }
        found.or_else(|| self.hark_flags.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    /// A duration flag (see [`Plan::hark_flag`]).
    pub fn hark_duration(&self, name: &str, extra: &[String]) -> Option<Duration> {
        self.hark_flag(name, extra).and_then(|v| humantime::parse_duration(&v).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        assert!("nope".parse::<Scenario>().is_err());
    }

    #[test]
    fn quick_plans_fit_a_minute_and_heal_before_the_end() {
        for s in Scenario::ALL {
            let p = Plan::new(s, true);
            assert!(
                p.run_for.as_secs_f64()
                    + p.conversation_timeout.as_secs_f64()
                    + p.settle.as_secs_f64()
                    <= 52.0
            );
            assert!(p.sessions >= 50);
            assert!(p.heal_at > p.fault_at && p.heal_at < p.run_for);
            let full = Plan::new(s, false);
            assert_eq!(full.sessions, 300);
            assert!(full.actions.iter().all(|(t, _)| *t >= 30.0 && *t <= 150.0));
        }
        let flap = Plan::new(Scenario::Flapping, false);
        assert_eq!(flap.actions.len(), 12);
        assert_eq!(flap.heal_at, Duration::from_secs(140));
    }

    #[test]
    fn fleet_kills_pod_a_inside_the_outage() {
        for quick in [true, false] {
            let p = Plan::new(Scenario::Fleet, quick);
            let kill = p
                .actions
                .iter()
                .find(|(_, a)| matches!(a, Action::KillPod { pod } if pod == "a"))
                .map(|(t, _)| *t)
                .unwrap();
            assert!(kill > p.fault_at.as_secs_f64() && kill < p.heal_at.as_secs_f64());
            assert!(p.hark_flag("outbox-claim-lease", &[]).is_some());
        }
    }

    #[test]
    fn extra_args_override_flags() {
        let p = Plan::new(Scenario::Incident, false);
        let extra: Vec<String> = ["--reconnect-max", "1s", "--breaker-cooldown=30s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(p.hark_duration("breaker-cooldown", &extra), Some(Duration::from_secs(30)));
        assert_eq!(p.hark_duration("reconnect-max", &extra), Some(Duration::from_secs(1)));
        assert_eq!(p.hark_duration("pusher-ping-timeout", &extra), Some(Duration::from_secs(20)));
        assert_eq!(p.hark_flag("recovery-rate", &[]), Some("50".into()));
    }
}
