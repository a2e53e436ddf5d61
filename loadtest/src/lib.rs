//! Operator tools for Hark (design §9): in-process fakes of its two upstreams, a
//! client swarm, and the drill that replays an incident end to end.
//!
//! - [`fake_stt`]: a Deepgram-compatible streaming STT server whose transcription is
//!   a pure function of the audio, so a test can predict every word.
//! - [`fake_pusher`]: a pusher (design §4) with fault modes switchable at run time
//!   and counters that prove how hark behaved (dials per second, duplicates, …).
//! - [`client`]: an app client of `/v4/listen` (used by `swarm` and the tests).
//! - [`swarm`]: N app clients streaming at real-time pace, measuring word latency,
//!   disconnects, status events and conversations (binary `swarm`).
//! - [`drill`]: an incident end to end — hark, the fakes and a swarm as processes,
//!   a fault schedule, targets judged, a report in JSON, Markdown and SVG (binary
//!   `drill`).
//! - [`latency`], [`prom`]: HDR latency histograms; reading hark's `/metrics`.
//! - [`cli`]: what the binaries share (logging, signals, JSON lines on stdout).
//!
//! Both fakes are libraries first: the gateway's integration tests start them on
//! `127.0.0.1:0` in-process and drive them through their handles.

pub mod cli;
pub mod client;
pub mod drill;
pub mod fake_pusher;
pub mod fake_stt;
pub mod latency;
pub mod prom;
pub mod swarm;
mod ws;
