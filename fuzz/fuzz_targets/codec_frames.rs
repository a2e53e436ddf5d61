//! The input format the `decode_*` targets share: a configuration byte, then
//! frames, each as a big-endian `u16` length and that many bytes (the last frame
//! takes what is left if the input ends early). Several frames per input let
//! mutations reach the decoders' state carried from frame to frame.

/// Splits a fuzz input into its configuration byte and frames.
pub fn split(data: &[u8]) -> (u8, Vec<&[u8]>) {
    let Some((&config, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut frames = Vec::new();
    while rest.len() >= 2 && frames.len() < 64 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let take = len.min(body.len());
        frames.push(&body[..take]);
        rest = &body[take..];
    }
    (config, frames)
}
