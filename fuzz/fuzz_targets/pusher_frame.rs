//! Fuzzes the pusher frame decoder (`PusherFrame::decode`), the parser of every
//! binary message pusher sends back (and of the frames hark replays).
//!
//! Checks: decoding arbitrary bytes never panics, hangs or allocates without bound;
//! a frame that decodes re-encodes to bytes that decode to the same frame, whose
//! encoding is stable (encode ∘ decode is the identity on encoded frames); and the
//! cheap `peek_code` agrees with the full decoder.

#![no_main]

use bytes::Bytes;
use hark_proto::pusher::peek_code;
use hark_proto::PusherFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = PusherFrame::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert_eq!(peek_code(data), Some(frame.code()), "peek_code disagrees with decode");

    let wire = frame.encode();
    let again = PusherFrame::decode(wire.clone())
        .unwrap_or_else(|e| panic!("re-encoded {frame:?} does not decode: {e}"));
    assert_eq!(again, frame, "frame changed across encode → decode");
    assert_eq!(again.encode(), wire, "encoding is not stable");
});
