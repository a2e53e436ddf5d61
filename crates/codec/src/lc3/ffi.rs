//! The few liblc3 functions Hark calls, declared by hand against Debian's
//! `lc3.h` (liblc3 1.0), and the one safe type that owns an encoder's or
//! decoder's memory. `tests/ffi_signatures.rs` compiles these declarations
//! against the installed header, so a mismatch fails the build of the tests.
//!
//! This is the crate's only unsafe code. What it relies on:
//! - liblc3 keeps all state in the caller's memory block (no globals, no
//!   allocation, no threads), so a handle is as `Send` as the memory it points at;
//! - the memory is `lc3_*_size()` bytes aligned to a pointer (`u64` words here),
//!   owned by the same struct as the handle, never moved (it is boxed) or freed
//!   while the handle lives;
//! - `lc3_decode`/`lc3_encode` read `nbytes` bytes of input and write exactly
//!   `lc3_frame_samples()` samples (stride 1), so the slices passed are checked
//!   against those lengths first.
#![allow(unsafe_code)]

use std::os::raw::{c_int, c_uint, c_void};

/// `struct lc3_decoder` (opaque).
#[repr(C)]
pub struct lc3_decoder {
    _private: [u8; 0],
}

/// `struct lc3_encoder` (opaque).
#[repr(C)]
pub struct lc3_encoder {
    _private: [u8; 0],
}

/// `enum lc3_pcm_format`; GCC gives an enum of small non-negative values the
/// type `unsigned int`, and the x86-64 and AArch64 ABIs pass it as one.
#[allow(non_camel_case_types)]
pub type lc3_pcm_format = c_uint;

/// `LC3_PCM_FORMAT_S16`: signed 16-bit samples in host order.
const LC3_PCM_FORMAT_S16: lc3_pcm_format = 0;

#[link(name = "lc3")]
extern "C" {
    pub fn lc3_frame_samples(dt_us: c_int, sr_hz: c_int) -> c_int;
    pub fn lc3_decoder_size(dt_us: c_int, sr_hz: c_int) -> c_uint;
    pub fn lc3_setup_decoder(
        dt_us: c_int,
        sr_hz: c_int,
        sr_pcm_hz: c_int,
        mem: *mut c_void,
    ) -> *mut lc3_decoder;
    pub fn lc3_decode(
        decoder: *mut lc3_decoder,
        input: *const c_void,
        nbytes: c_int,
        fmt: lc3_pcm_format,
        pcm: *mut c_void,
        stride: c_int,
    ) -> c_int;
    pub fn lc3_encoder_size(dt_us: c_int, sr_hz: c_int) -> c_uint;
    pub fn lc3_setup_encoder(
        dt_us: c_int,
        sr_hz: c_int,
        sr_pcm_hz: c_int,
        mem: *mut c_void,
    ) -> *mut lc3_encoder;
    pub fn lc3_encode(
        encoder: *mut lc3_encoder,
        fmt: lc3_pcm_format,
        pcm: *const c_void,
        stride: c_int,
        nbytes: c_int,
        out: *mut c_void,
    ) -> c_int;
}

/// Pointer-aligned memory of at least `bytes` bytes, zeroed.
fn memory(bytes: c_uint) -> Box<[u64]> {
    vec![0u64; (bytes as usize).div_ceil(8)].into_boxed_slice()
}

/// Samples per frame for (`dt_us`, `sr_hz`), or `None` if liblc3 refuses them.
pub fn frame_samples(dt_us: i32, sr_hz: i32) -> Option<usize> {
    // SAFETY: a pure function of its two integers.
    let samples = unsafe { lc3_frame_samples(dt_us, sr_hz) };
    usize::try_from(samples).ok().filter(|&n| n > 0)
}

/// What one `lc3_decode` call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The frame decoded.
    Frame,
    /// liblc3 found the bitstream corrupt and concealed the frame instead.
    Concealed,
}

/// A liblc3 decoder and the memory it lives in.
pub struct RawDecoder {
    handle: *mut lc3_decoder,
    samples: usize,
    _memory: Box<[u64]>,
}

// SAFETY: the decoder's whole state is in `_memory`, which this struct owns and
// nothing else references; liblc3 has no global or thread-local state.
unsafe impl Send for RawDecoder {}

impl RawDecoder {
    /// A decoder for `dt_us` frames at `sr_hz`; `None` if liblc3 refuses them.
    pub fn new(dt_us: i32, sr_hz: i32) -> Option<Self> {
        let samples = frame_samples(dt_us, sr_hz)?;
        // SAFETY: a pure function of its two integers.
        let size = unsafe { lc3_decoder_size(dt_us, sr_hz) };
        if size == 0 {
            return None;
        }
        let mut memory = memory(size);
        // SAFETY: `memory` is `size` bytes, pointer-aligned, and outlives the
        // handle (both live in the returned struct; the box never moves).
        let handle = unsafe { lc3_setup_decoder(dt_us, sr_hz, 0, memory.as_mut_ptr().cast()) };
        if handle.is_null() {
            return None;
        }
        Some(Self { handle, samples, _memory: memory })
    }

    /// Samples one frame decodes to.
    pub fn frame_samples(&self) -> usize {
        self.samples
    }

    /// Decodes one frame of `input.len()` bytes into `pcm`, which must hold exactly
    /// [`frame_samples`](Self::frame_samples) samples. `None`: bad arguments (the
    /// frame is outside liblc3's 20..=400 bytes, or `pcm` has the wrong length).
    pub fn decode(&mut self, input: &[u8], pcm: &mut [i16]) -> Option<Decoded> {
        if pcm.len() != self.samples || !(20..=400).contains(&input.len()) {
            return None;
        }
        // SAFETY: `handle` is live (owned memory); `input` is readable for
        // `input.len()` bytes; `pcm` is writable for `samples` samples at stride 1,
        // exactly what liblc3 writes for this handle's frame duration and rate.
        let status = unsafe {
            lc3_decode(
                self.handle,
                input.as_ptr().cast(),
                input.len() as c_int,
                LC3_PCM_FORMAT_S16,
                pcm.as_mut_ptr().cast(),
                1,
            )
        };
        match status {
            0 => Some(Decoded::Frame),
            1 => Some(Decoded::Concealed),
            _ => None,
        }
    }
}

/// A liblc3 encoder and the memory it lives in.
pub struct RawEncoder {
    handle: *mut lc3_encoder,
    samples: usize,
    _memory: Box<[u64]>,
}

// SAFETY: as for `RawDecoder`.
unsafe impl Send for RawEncoder {}

impl RawEncoder {
    /// An encoder for `dt_us` frames at `sr_hz`; `None` if liblc3 refuses them.
    pub fn new(dt_us: i32, sr_hz: i32) -> Option<Self> {
        let samples = frame_samples(dt_us, sr_hz)?;
        // SAFETY: a pure function of its two integers.
        let size = unsafe { lc3_encoder_size(dt_us, sr_hz) };
        if size == 0 {
            return None;
        }
        let mut memory = memory(size);
        // SAFETY: as in `RawDecoder::new`.
        let handle = unsafe { lc3_setup_encoder(dt_us, sr_hz, 0, memory.as_mut_ptr().cast()) };
        if handle.is_null() {
            return None;
        }
        Some(Self { handle, samples, _memory: memory })
    }

    /// Samples one frame encodes.
    pub fn frame_samples(&self) -> usize {
        self.samples
    }

    /// Encodes exactly [`frame_samples`](Self::frame_samples) samples into a frame
    /// of `out.len()` bytes (20..=400). `None`: bad arguments.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Option<()> {
        if pcm.len() != self.samples || !(20..=400).contains(&out.len()) {
            return None;
        }
        // SAFETY: `handle` is live; `pcm` is readable for `samples` samples at
        // stride 1; `out` is writable for `out.len()` bytes, the size asked for.
        let status = unsafe {
            lc3_encode(
                self.handle,
                LC3_PCM_FORMAT_S16,
                pcm.as_ptr().cast(),
                1,
                out.len() as c_int,
                out.as_mut_ptr().cast(),
            )
        };
        (status == 0).then_some(())
    }
}
