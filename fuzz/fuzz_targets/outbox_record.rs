//! Fuzzes the outbox record reader (`outbox::format::decode`), which reads files
//! back from disk after a crash, a torn write or an operator's copy.
//!
//! Each input is read twice: as a whole file (magic, length and checksum as
//! given, so torn and corrupt headers are explored), and as the payload of a file
//! whose header is correct (so mutations reach the record parser instead of
//! dying at the CRC check).
//!
//! Checks: decoding never panics, hangs or allocates without bound (a corrupt
//! length field must not make the reader reserve it); a file that decodes holds a
//! record of the current version; and `encode` of that record decodes to the same
//! record.

#![no_main]

use hark_gateway::outbox::format::{decode, encode, HEADER_LEN, MAGIC};
use hark_proto::ConversationRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);

    let mut file = Vec::with_capacity(HEADER_LEN + data.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    file.extend_from_slice(&crc32(data).to_le_bytes());
    file.extend_from_slice(data);
    check(&file);
});

fn check(file: &[u8]) {
    let Ok(record) = decode(file) else {
        return;
    };
    assert_eq!(record.version, ConversationRecord::VERSION);
    let again = decode(&encode(&record))
        .unwrap_or_else(|e| panic!("re-encoded {record:?} does not decode: {e}"));
    assert_eq!(again, record, "record changed across encode → decode");
}

/// CRC-32 (IEEE), bitwise: written out here so the harness does not reuse the
/// reader's own checksum code to build its inputs.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}
