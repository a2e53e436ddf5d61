//! PocketSphinx behind the [`Recognizer`] trait: the C API declared by hand,
//! a [`Decoder`] that owns one `ps_decoder_t`, and model-file discovery.
//!
//! The declarations in [`sys`] follow the header of Debian's
//! `libpocketsphinx-dev` 0.8+5prealpha+1-15 (`/usr/include/pocketsphinx/pocketsphinx.h`,
//! with `cmd_ln.h` and `err.h` from `libsphinxbase-dev`).
//! What the C API has no function for (reaching and resetting the CMN state)
//! lives in `csrc/hark_ps.c`, compiled by build.rs against the same headers.
//! `tests/ffi_signatures.rs` compiles each declaration against those headers
//! and fails on any mismatch; keep one `pub fn` per declaration so it can read them.
//!
//! A decoder serves many streams in turn. Each stream starts from the same
//! state: `ps_start_stream` resets the frame clock and the front end's noise
//! estimate, and [`Decoder`] puts the live cepstral mean (CMN), which adapts
//! to each speaker and microphone, back to its state right after loading. So a
//! transcript never depends on which session used the decoder before, and is
//! what `pocketsphinx_continuous` prints for the same audio.

// This crate denies unsafe code; this module is the exception because calling
// C is unsafe by definition. Every unsafe block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::Once;

use crate::recognizer::{RawSeg, Recognizer};
use crate::{LocalEngineConfig, LocalSttError};

/// The C functions used, as declared in the packaged headers.
#[allow(non_camel_case_types)]
pub(crate) mod sys {
    use std::ffi::{c_char, c_int};

    /// `ps_decoder_t` (opaque).
    #[repr(C)]
    pub struct ps_decoder_t {
        _opaque: [u8; 0],
    }
    /// `ps_seg_t`, a word-segment iterator (opaque).
    #[repr(C)]
    pub struct ps_seg_t {
        _opaque: [u8; 0],
    }
    /// `cmd_ln_t`, a parsed configuration (opaque).
    #[repr(C)]
    pub struct cmd_ln_t {
        _opaque: [u8; 0],
    }
    /// `arg_t`, an argument-definition table (opaque).
    #[repr(C)]
    pub struct arg_t {
        _opaque: [u8; 0],
    }
    /// `cmn_t`, cepstral-mean-normalisation state (opaque here).
    #[repr(C)]
    pub struct cmn_t {
        _opaque: [u8; 0],
    }
    /// stdio's `FILE` (opaque).
    #[allow(clippy::upper_case_acronyms)] // C's name.
    #[repr(C)]
    pub struct FILE {
        _opaque: [u8; 0],
    }

    // Linked by build.rs through pkg-config.
    extern "C" {
        pub fn ps_args() -> *const arg_t;
        pub fn cmd_ln_parse_r(
            inout_cmdln: *mut cmd_ln_t,
            defn: *const arg_t,
            argc: i32,
            argv: *mut *mut c_char,
            strict: i32,
        ) -> *mut cmd_ln_t;
        pub fn cmd_ln_free_r(cmdln: *mut cmd_ln_t) -> c_int;
        pub fn err_set_logfp(stream: *mut FILE);
        pub fn ps_init(config: *mut cmd_ln_t) -> *mut ps_decoder_t;
        pub fn ps_free(ps: *mut ps_decoder_t) -> c_int;
        pub fn ps_start_stream(ps: *mut ps_decoder_t) -> c_int;
        pub fn ps_start_utt(ps: *mut ps_decoder_t) -> c_int;
        pub fn ps_process_raw(
            ps: *mut ps_decoder_t,
            data: *const i16,
            n_samples: usize,
            no_search: c_int,
            full_utt: c_int,
        ) -> c_int;
        pub fn ps_get_in_speech(ps: *mut ps_decoder_t) -> u8;
        pub fn ps_end_utt(ps: *mut ps_decoder_t) -> c_int;
        pub fn ps_seg_iter(ps: *mut ps_decoder_t) -> *mut ps_seg_t;
        pub fn ps_seg_next(seg: *mut ps_seg_t) -> *mut ps_seg_t;
        pub fn ps_seg_word(seg: *mut ps_seg_t) -> *const c_char;
        pub fn ps_seg_frames(seg: *mut ps_seg_t, out_sf: *mut c_int, out_ef: *mut c_int);
        // csrc/hark_ps.h
        pub fn hark_ps_live_cmn(ps: *mut ps_decoder_t) -> *mut cmn_t;
        pub fn hark_cmn_veclen(cmn: *const cmn_t) -> i32;
        pub fn hark_cmn_save(cmn: *const cmn_t, mean: *mut f32);
        pub fn hark_cmn_restart(cmn: *mut cmn_t, mean: *const f32);
    }
}

/// Set to anything to keep PocketSphinx's own log on stderr (it is silenced
/// by default: it logs a few hundred lines per decoder loaded).
pub(crate) const LOG_ENV: &str = "HARK_POCKETSPHINX_LOG";

/// The packaged en-us model (from pkg-config's `modeldir` at build time).
const PACKAGED_MODEL: &str = concat!(env!("HARK_POCKETSPHINX_MODELDIR"), "/en-us");

/// The files one decoder is built from.
#[derive(Clone, Debug)]
pub(crate) struct ModelPaths {
    /// Acoustic model directory (`-hmm`).
    pub hmm: PathBuf,
    /// Language model (`-lm`).
    pub lm: PathBuf,
    /// Pronunciation dictionary (`-dict`).
    pub dict: PathBuf,
}

impl ModelPaths {
    /// Finds the model files `config` names; see [`LocalEngineConfig::model_dir`].
    pub(crate) fn resolve(config: &LocalEngineConfig) -> Result<Self, LocalSttError> {
        let dir = config.model_dir.clone().unwrap_or_else(|| PathBuf::from(PACKAGED_MODEL));
        let model = |msg: String| LocalSttError::Model(msg);
        let entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| {
                model(format!(
                    "cannot read model directory {}: {e} (Debian: install pocketsphinx-en-us, \
                     see scripts/setup.sh)",
                    dir.display()
                ))
            })?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let hmm = only_one(
            &dir,
            "acoustic model (a subdirectory with `mdef`)",
            entries.iter().filter(|p| p.join("mdef").is_file()),
        )?;
        let lm = only_one(
            &dir,
            "language model (*.lm.bin, *.lm, *.lm.DMP)",
            entries.iter().filter(|p| {
                let n = name(p).unwrap_or_default().to_ascii_lowercase();
                p.is_file()
                    && [".lm.bin", ".lm", ".lm.dmp"].iter().any(|s| n.ends_with(s))
                    && !n.contains("-phone")
            }),
        )?;
        let dict = match &config.dict {
            Some(dict) if dict.is_file() => dict.clone(),
            Some(dict) => {
                return Err(model(format!("dictionary {} is not a readable file", dict.display())))
            }
            None => only_one(
                &dir,
                "pronunciation dictionary (*.dict)",
                entries
                    .iter()
                    .filter(|p| p.is_file() && name(p).is_some_and(|n| n.ends_with(".dict"))),
            )?,
        };
        Ok(Self { hmm, lm, dict })
    }
}

/// The single path `found` yields, or an error naming what was looked for.
fn only_one<'a>(
    dir: &Path,
    what: &str,
    found: impl Iterator<Item = &'a PathBuf>,
) -> Result<PathBuf, LocalSttError> {
    let found: Vec<&PathBuf> = found.collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(LocalSttError::Model(format!("no {what} in {}", dir.display()))),
        many => Err(LocalSttError::Model(format!(
            "more than one {what} in {}: {}",
            dir.display(),
            many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Silences the library's log (once per process, before any decoder exists)
/// unless [`LOG_ENV`] is set.
fn quiet_library_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(LOG_ENV).is_none() {
            // SAFETY: a null stream is documented to disable logging; this
            // runs once, before any decoder is created, so no thread is logging.
            unsafe { sys::err_set_logfp(ptr::null_mut()) }
        }
    });
}

/// Argument strings handed to `cmd_ln_parse_r`, which keeps pointers to them
/// for the life of the configuration (its header says so), so they are freed
/// only after it.
struct Args(Vec<*mut c_char>);

impl Drop for Args {
    fn drop(&mut self) {
        for &arg in &self.0 {
            // SAFETY: each pointer came from `CString::into_raw` and is freed once.
            drop(unsafe { CString::from_raw(arg) });
        }
    }
}

/// One reference to a `cmd_ln_t`.
struct Config(NonNull<sys::cmd_ln_t>);

impl Drop for Config {
    fn drop(&mut self) {
        // SAFETY: we own one reference; the decoder holds its own (ps_init retains).
        unsafe { sys::cmd_ln_free_r(self.0.as_ptr()) };
    }
}

/// One `ps_decoder_t`.
struct Ps(NonNull<sys::ps_decoder_t>);

impl Drop for Ps {
    fn drop(&mut self) {
        // SAFETY: we own the only reference to this decoder.
        unsafe { sys::ps_free(self.0.as_ptr()) };
    }
}

/// A PocketSphinx decoder with its own copy of the model.
pub(crate) struct Decoder {
    // Field order is drop order: decoder, then configuration, then the strings
    // the configuration points into.
    ps: Ps,
    _config: Config,
    _args: Args,
    /// Between `ps_start_utt` and `ps_end_utt`.
    in_utt: bool,
    /// The live cepstral mean as loaded, restored at each stream's start
    /// (empty if the model does no live CMN).
    initial_cmn: Vec<f32>,
}

// SAFETY: a decoder, its configuration and its argument strings belong to this
// value alone (nothing is shared with another decoder), PocketSphinx keeps no
// thread-local state for them, and every call goes through `&mut self`, so
// moving the value to another thread is sound.
unsafe impl Send for Decoder {}

impl Decoder {
    /// Loads a decoder from `paths` (about 0.6 s and 100 MB with en-us).
    pub(crate) fn load(paths: &ModelPaths) -> Result<Self, String> {
        quiet_library_log();
        let mut strings = vec![CString::from(c"hark")];
        for (flag, path) in [("-hmm", &paths.hmm), ("-lm", &paths.lm), ("-dict", &paths.dict)] {
            strings.push(CString::new(flag).map_err(|e| e.to_string())?);
            let path = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| format!("model path {} contains a NUL byte", path.display()))?;
            strings.push(path);
        }
        let argc = i32::try_from(strings.len()).map_err(|e| e.to_string())?;
        let mut args = Args(strings.into_iter().map(CString::into_raw).collect());
        // SAFETY: `ps_args()` is the library's static argument table; `args`
        // holds `argc` valid NUL-terminated strings that outlive the returned
        // configuration (see `Decoder`'s field order).
        let config = unsafe {
            sys::cmd_ln_parse_r(ptr::null_mut(), sys::ps_args(), argc, args.0.as_mut_ptr(), 1)
        };
        let config =
            Config(NonNull::new(config).ok_or("PocketSphinx rejected the decoder arguments")?);
        // SAFETY: `config` is a valid configuration; ps_init takes its own reference.
        let ps = unsafe { sys::ps_init(config.0.as_ptr()) };
        let ps = Ps(NonNull::new(ps).ok_or_else(|| {
            format!(
                "PocketSphinx could not load the model (hmm {}, lm {}, dict {}); \
                 set {LOG_ENV}=1 to see its log",
                paths.hmm.display(),
                paths.lm.display(),
                paths.dict.display()
            )
        })?);
        let mut decoder =
            Self { ps, _config: config, _args: args, in_utt: false, initial_cmn: Vec::new() };
        if let Some(cmn) = decoder.live_cmn() {
            // SAFETY: `cmn` is the live decoder's own CMN state.
            let len = unsafe { sys::hark_cmn_veclen(cmn.as_ptr()) };
            let mut initial = vec![0.0; usize::try_from(len).unwrap_or(0)];
            if !initial.is_empty() {
                // SAFETY: `initial` has room for the `len` values written.
                unsafe { sys::hark_cmn_save(cmn.as_ptr(), initial.as_mut_ptr()) };
            }
            decoder.initial_cmn = initial;
        }
        Ok(decoder)
    }

    /// The decoder's live CMN state, if it has one.
    fn live_cmn(&mut self) -> Option<NonNull<sys::cmn_t>> {
        // SAFETY: live decoder; the result lives as long as the decoder.
        NonNull::new(unsafe { sys::hark_ps_live_cmn(self.ptr()) })
    }

    fn ptr(&mut self) -> *mut sys::ps_decoder_t {
        self.ps.0.as_ptr()
    }

    /// Turns a C status (`< 0` is failure) into a `Result`.
    fn check(what: &str, status: c_int) -> Result<(), String> {
        if status < 0 {
            Err(format!("{what} failed ({status})"))
        } else {
            Ok(())
        }
    }
}

impl Recognizer for Decoder {
    fn begin_stream(&mut self) -> Result<(), String> {
        if self.in_utt {
            // An abandoned stream left its utterance open; discard it.
            self.end_utt()?;
        }
        // SAFETY: live decoder, no utterance open.
        Self::check("ps_start_stream", unsafe { sys::ps_start_stream(self.ptr()) })?;
        if let (Some(cmn), false) = (self.live_cmn(), self.initial_cmn.is_empty()) {
            // SAFETY: `initial_cmn` was saved from this same state, so it has
            // the `veclen` values hark_cmn_restart reads.
            unsafe { sys::hark_cmn_restart(cmn.as_ptr(), self.initial_cmn.as_ptr()) };
        }
        self.start_utt()
    }

    fn process(&mut self, samples: &[i16]) -> Result<bool, String> {
        if !self.in_utt {
            return Err("audio outside an utterance".to_owned());
        }
        // SAFETY: live decoder with an utterance open; `samples` is valid for
        // `len` reads and not kept past the call.
        let status =
            unsafe { sys::ps_process_raw(self.ptr(), samples.as_ptr(), samples.len(), 0, 0) };
        Self::check("ps_process_raw", status)?;
        // SAFETY: live decoder.
        Ok(unsafe { sys::ps_get_in_speech(self.ptr()) } != 0)
    }

    fn end_utt(&mut self) -> Result<Vec<RawSeg>, String> {
        if !self.in_utt {
            return Ok(Vec::new());
        }
        self.in_utt = false;
        // SAFETY: live decoder with an utterance open.
        Self::check("ps_end_utt", unsafe { sys::ps_end_utt(self.ptr()) })?;
        let mut segs = Vec::new();
        // SAFETY: live decoder after ps_end_utt; the iterator is walked to its
        // end, where ps_seg_next frees it and returns null, and each word is
        // copied before the iterator moves on.
        unsafe {
            let mut seg = sys::ps_seg_iter(self.ptr());
            while !seg.is_null() {
                let word = sys::ps_seg_word(seg);
                let word = if word.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(word).to_string_lossy().into_owned()
                };
                let (mut start_frame, mut end_frame): (c_int, c_int) = (0, 0);
                sys::ps_seg_frames(seg, &mut start_frame, &mut end_frame);
                segs.push(RawSeg { word, start_frame, end_frame });
                seg = sys::ps_seg_next(seg);
            }
        }
        Ok(segs)
    }

    fn start_utt(&mut self) -> Result<(), String> {
        // SAFETY: live decoder, no utterance open.
        Self::check("ps_start_utt", unsafe { sys::ps_start_utt(self.ptr()) })?;
        self.in_utt = true;
        Ok(())
    }
}
