//! The outbox file format: `HARKOBX1`, `u32` LE length, `u32` LE CRC-32, JSON record.
//!
//! A torn write (crash between `write` and `fsync`, a truncated copy) fails the
//! length or checksum test, and the reader quarantines the file instead of
//! replaying garbage.

use hark_proto::ConversationRecord;

/// File magic and format version.
pub const MAGIC: &[u8; 8] = b"HARKOBX1";
/// Extension of pending record files.
pub const EXTENSION: &str = "rec";
/// Header length: magic + length + checksum.
pub const HEADER_LEN: usize = 16;
/// Largest record the reader accepts (a guard against a corrupt length field).
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// Why a file is not a valid record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// Shorter than the header.
    #[error("truncated header ({0} bytes)")]
    ShortHeader(usize),
    /// Not an outbox file or an unknown version.
    #[error("bad magic")]
    Magic,
    /// Length field disagrees with the file.
    #[error("length field says {declared} bytes, file has {actual}")]
    Length {
        /// From the header.
        declared: usize,
        /// In the file.
        actual: usize,
    },
    /// Checksum mismatch.
    #[error("checksum mismatch")]
    Checksum,
    /// Payload is not a record.
    #[error("payload is not a record: {0}")]
    Json(String),
    /// A record of a version this build does not read.
    #[error("record version {0} is not supported")]
    Version(u32),
}

/// Encodes a record as file contents.
pub fn encode(record: &ConversationRecord) -> Vec<u8> {
    let payload = serde_json::to_vec(record).expect("records always serialize");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes file contents, checking magic, length and checksum.
pub fn decode(data: &[u8]) -> Result<ConversationRecord, FormatError> {
    if data.len() < HEADER_LEN {
        return Err(FormatError::ShortHeader(data.len()));
    }
    if &data[..8] != MAGIC {
        return Err(FormatError::Magic);
    }
    let declared = u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize;
    let checksum = u32::from_le_bytes([data[12], data[13], data[14], data[15]]);
    let payload = &data[HEADER_LEN..];
    if declared != payload.len() || declared > MAX_RECORD_BYTES {
        return Err(FormatError::Length { declared, actual: payload.len() });
    }
    if crc32fast::hash(payload) != checksum {
        return Err(FormatError::Checksum);
    }
    let record: ConversationRecord =
        serde_json::from_slice(payload).map_err(|e| FormatError::Json(e.to_string()))?;
    if record.version != ConversationRecord::VERSION {
        return Err(FormatError::Version(record.version));
    }
    Ok(record)
}

/// File name of a record: zero-padded finish time (so names sort oldest first) and
/// the conversation id with anything but `[A-Za-z0-9-]` replaced.
pub fn file_name(record: &ConversationRecord) -> String {
    let id: String = record
        .conversation_id
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    format!("{:016}-{id}.{EXTENSION}", record.finished_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ConversationRecord {
        ConversationRecord {
            version: 1,
            conversation_id: "c0ffee00-0000-4000-8000-000000000001".into(),
            uid: "user-1".into(),
            language: "en".into(),
            sample_rate: 16_000,
            session_id: "s1".into(),
            started_at_ms: 1_700_000_000_000,
            finished_at_ms: 1_700_000_060_000,
            segments: vec![],
        }
    }

    #[test]
    fn round_trips() {
        let r = record();
        assert_eq!(decode(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode(&record());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len} bytes parsed");
        }
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let bytes = encode(&record());
        for i in [0, 9, 13, HEADER_LEN, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i} parsed");
        }
    }

    #[test]
    fn names_sort_by_finish_time_and_are_safe() {
        let mut a = record();
        a.conversation_id = "../../etc/passwd".into();
        let name = file_name(&a);
        assert!(!name.contains('/'));
        let mut b = record();
        b.finished_at_ms += 1;
        assert!(file_name(&record()) < file_name(&b));
    }
}
