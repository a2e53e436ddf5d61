//! Operator tools for Hark (design §9): the fakes of its two upstreams as binaries
//! (`fake-stt`, `fake-pusher`, thin mains over `hark-fakes`), a client swarm, and
//! the drill that replays an incident end to end.
//!
//! - [`swarm`]: N app clients streaming at real-time pace, measuring word latency,
//!   disconnects, status events and conversations (binary `swarm`).
//! - [`drill`]: an incident end to end — hark, the fakes and a swarm as processes,
//!   a fault schedule, targets judged, a report in JSON, Markdown and SVG (binary
//!   `drill`).
//! - [`bench`]: the relay's own cost (CPU per audio MB, memory per session) beside
//!   nginx tunnelling the same swarm to fake-stt (binary `bench`).
//! - [`latency`]: HDR latency histograms.
//! - [`cli`]: what the binaries share (logging, signals, JSON lines on stdout).

pub mod bench;
pub mod cli;
pub mod drill;
pub mod latency;
pub mod swarm;
