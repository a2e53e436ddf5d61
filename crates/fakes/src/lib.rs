//! Hark's test infrastructure: in-process fakes of its two upstreams, an app
//! client, and a reader of its `/metrics`. The gateway's and hark's integration
//! tests use it, and so do the operator tools in `hark-loadtest`.
//!
//! - [`fake_stt`]: a Deepgram-compatible streaming STT server whose transcription is
//!   a pure function of the audio, so a test can predict every word.
//! - [`fake_pusher`]: a pusher (design §4) with fault modes switchable at run time
//!   and counters that prove how hark behaved (dials per second, duplicates, …).
//! - [`client`]: an app client of `/v4/listen`.
//! - [`prom`], [`admin`]: reading hark's `/metrics` and its admin port.
//! - [`process`]: a real `hark` process on loopback ports.
//! - [`wav`]: a WAV file as the 16-bit PCM a client sends.
//!
//! Both fakes start on `127.0.0.1:0` in-process and are driven through their
//! handles, or through an HTTP control port when they run as the `fake-stt` and
//! `fake-pusher` binaries of `hark-loadtest`.

pub mod admin;
pub mod client;
pub mod fake_pusher;
pub mod fake_stt;
pub mod ffi;
pub mod process;
pub mod prom;
mod server;
pub mod wav;
mod ws;
