//! Breaker transitions and dials as the drill reads them from hark's `/metrics`,
//! scraped once a second: how many transitions into each state happened since the
//! last scrape (`pusher_circuit_breaker_transitions_total{to}`) and when the latest
//! one did (`pusher_circuit_breaker_last_transition_timestamp_seconds{to}`), and
//! how many dials hark made in each scrape interval (`pusher_connect_attempts_total`,
//! every result: a dial to a closed port counts though it never reaches pusher).

use hark_fakes::prom::Scrape;
use serde::Serialize;

/// hark's breaker transitions by target state.
const TRANSITIONS: &str = "pusher_circuit_breaker_transitions_total";
/// Unix seconds of the latest transition into each state.
const LAST_TRANSITION: &str = "pusher_circuit_breaker_last_transition_timestamp_seconds";
/// hark's real dials, by result.
const DIALS: &str = "pusher_connect_attempts_total";
/// The breaker's states, as the `to` label spells them.
const STATES: [&str; 3] = ["open", "half_open", "closed"];

/// A breaker transition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Transition {
    /// Unix ms, by hark's clock.
    pub unix_ms: u64,
    /// `open`, `half_open` or `closed`.
    pub to: String,
}

/// The dials hark made between two scrapes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DialWindow {
    /// Unix ms of the earlier scrape.
    pub from_ms: u64,
    /// Unix ms of the later scrape.
    pub to_ms: u64,
    /// Dials counted in between.
    pub dials: u64,
}

/// Transitions and dial windows folded from successive scrapes.
#[derive(Debug, Default)]
pub struct HarkMetrics {
    /// The last scrape and when it was taken.
    prev: Option<(u64, Scrape)>,
    /// Breaker transitions, in time order.
    pub transitions: Vec<Transition>,
    /// One window per pair of consecutive successful scrapes.
    pub dials: Vec<DialWindow>,
    /// Anything the scrapes could not tell exactly.
    pub notes: Vec<String>,
}

impl HarkMetrics {
    /// Folds in the scrape taken at `unix_ms`.
    pub fn observe(&mut self, unix_ms: u64, scrape: &Scrape) {
        let before = |name: &str, labels: &[(&str, &str)]| {
            self.prev.as_ref().map_or(0.0, |(_, p)| p.get(name, labels))
        };
        let mut fresh = Vec::new();
        for to in STATES {
            let count = scrape.get(TRANSITIONS, &[("to", to)]) - before(TRANSITIONS, &[("to", to)]);
            let count = count.max(0.0).round() as u64;
            if count == 0 {
                continue;
            }
            let at = (scrape.get(LAST_TRANSITION, &[("to", to)]) * 1000.0).round() as u64;
            if count > 1 {
                // A cooldown of a second or more allows one per state per scrape.
                fresh.push(format!(
                    "{count} transitions to {to} between two scrapes; all placed at the latest"
                ));
            }
            for _ in 0..count {
                self.transitions.push(Transition { unix_ms: at, to: to.to_owned() });
            }
        }
        self.notes.extend(fresh);
        self.transitions.sort_by_key(|t| t.unix_ms);
        if let Some((from_ms, prev)) = &self.prev {
            let dials = (scrape.get(DIALS, &[]) - prev.get(DIALS, &[])).max(0.0).round() as u64;
            self.dials.push(DialWindow { from_ms: *from_ms, to_ms: unix_ms, dials });
        }
        self.prev = Some((unix_ms, scrape.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(opens: u32, open_at: f64, half_opens: u32, half_open_at: f64, dials: u32) -> Scrape {
        Scrape::parse(&format!(
            "pusher_circuit_breaker_transitions_total{{to=\"open\"}} {opens}\n\
             pusher_circuit_breaker_transitions_total{{to=\"half_open\"}} {half_opens}\n\
             pusher_circuit_breaker_transitions_total{{to=\"closed\"}} 0\n\
             pusher_circuit_breaker_last_transition_timestamp_seconds{{to=\"open\"}} {open_at}\n\
             pusher_circuit_breaker_last_transition_timestamp_seconds{{to=\"half_open\"}} {half_open_at}\n\
             pusher_circuit_breaker_last_transition_timestamp_seconds{{to=\"closed\"}} 0\n\
             pusher_connect_attempts_total{{result=\"ok\"}} 3\n\
             pusher_connect_attempts_total{{result=\"refused\"}} {dials}\n"
        ))
    }

    #[test]
    fn transitions_and_dials_come_from_counter_deltas_and_stamps() {
        let mut m = HarkMetrics::default();
        m.observe(1_000, &scrape(0, 0.0, 0, 0.0, 0));
        assert!(m.transitions.is_empty());
        // Opened at 1.5 s after 20 refused dials.
        m.observe(2_000, &scrape(1, 1.5, 0, 0.0, 20));
        // Nothing new: the stamp of the old transition is not read again.
        m.observe(3_000, &scrape(1, 1.5, 0, 0.0, 20));
        // A probe: half-open at 11.2 s, failed at once, open again at 11.204 s.
        m.observe(12_000, &scrape(2, 11.204, 1, 11.2, 21));
        let seen: Vec<(u64, &str)> =
            m.transitions.iter().map(|t| (t.unix_ms, t.to.as_str())).collect();
        assert_eq!(seen, [(1_500, "open"), (11_200, "half_open"), (11_204, "open")]);
        let dials: Vec<(u64, u64, u64)> =
            m.dials.iter().map(|w| (w.from_ms, w.to_ms, w.dials)).collect();
        assert_eq!(dials, [(1_000, 2_000, 20), (2_000, 3_000, 0), (3_000, 12_000, 1)]);
        assert!(m.notes.is_empty());
    }

    #[test]
    fn transitions_before_the_first_scrape_count_and_doubles_are_noted() {
        let mut m = HarkMetrics::default();
        m.observe(5_000, &scrape(2, 4.0, 1, 3.0, 0));
        assert_eq!(m.transitions.len(), 3);
        assert_eq!(m.transitions[0], Transition { unix_ms: 3_000, to: "half_open".into() });
        assert_eq!(m.notes.len(), 1, "{:?}", m.notes);
        assert!(m.dials.is_empty(), "a window needs two scrapes");
    }
}
