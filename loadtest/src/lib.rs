//! Operator tools for Hark: in-process fakes of its two upstreams, and the thin
//! binaries that run them (`fake-stt`, `fake-pusher`).
//!
//! - [`fake_stt`]: a Deepgram-compatible streaming STT server whose transcription is
//!   a pure function of the audio, so a test can predict every word.
//! - [`fake_pusher`]: a pusher (design §4) with fault modes switchable at run time
//!   and counters that prove how hark behaved (dials per second, duplicates, …).
//! - [`client`]: an app client of `/v4/listen` (used by `swarm` and the tests).
//! - [`cli`]: what the binaries share (logging, signals, JSON lines on stdout).
//!
//! Both fakes are libraries first: the gateway's integration tests start them on
//! `127.0.0.1:0` in-process and drive them through their handles.

pub mod cli;
pub mod client;
pub mod fake_pusher;
pub mod fake_stt;
mod ws;
