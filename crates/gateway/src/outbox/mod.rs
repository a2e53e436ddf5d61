//! The durable outbox of the fallback path.
//!
//! One file per conversation record, written to `tmp/`, fsynced, renamed into the
//! outbox directory and the directory fsynced, so a record the client was told about
//! survives a crash or `kill -9`. File I/O runs on tokio's blocking pool, never on a
//! runtime thread. Files that fail their checksum or do not parse are moved to
//! `quarantine/` and counted, never fatal.
//!
//! File layout: `HARKOBX1` magic, `u32` LE payload length, `u32` LE CRC-32 of the
//! payload, then the payload: the record as JSON.

pub mod deliver;
pub mod drainer;
pub mod format;
pub mod shared;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hark_proto::ConversationRecord;
use tokio::sync::Notify;

use crate::metrics::{
    OUTBOX_BYTES, OUTBOX_MAX_BYTES, OUTBOX_QUARANTINED, OUTBOX_RECORDS, OUTBOX_REFUSED,
    OUTBOX_WRITE_ERRORS,
};

/// Why the outbox could not take or give a record.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Taking the record would exceed `--outbox-max-bytes`.
    #[error("outbox full: {used} of {max} bytes used, record needs {need}")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The limit.
        max: u64,
        /// The record's size.
        need: u64,
    },
    /// A file failed its checksum or did not parse; it was quarantined.
    #[error("corrupt outbox file {path}: {reason}")]
    Corrupt {
        /// The file (now under `quarantine/`).
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The filesystem failed.
    #[error("outbox I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A pending record on disk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Its file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Records and bytes on disk.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    records: u64,
    bytes: u64,
}

/// The outbox of one process. Shared by all sessions' links and the drainer.
#[derive(Debug)]
pub struct Outbox {
    /// Directory of pending records.
    dir: PathBuf,
    /// `--outbox-max-bytes`.
    max_bytes: u64,
    /// Accounting; held only for a few instructions, never across `.await`.
    usage: Mutex<Usage>,
    /// Wakes the drainer when a record is written.
    written: Notify,
}

impl Outbox {
    /// Opens (creating) the outbox directory, clears half-written temporaries and
    /// counts what is pending.
    pub async fn open(dir: PathBuf, max_bytes: u64) -> Result<Self, OutboxError> {
        let scan_dir = dir.clone();
        let usage = tokio::task::spawn_blocking(move || -> std::io::Result<Usage> {
            std::fs::create_dir_all(scan_dir.join("tmp"))?;
            std::fs::create_dir_all(scan_dir.join("quarantine"))?;
            for tmp in std::fs::read_dir(scan_dir.join("tmp"))? {
                let _ = std::fs::remove_file(tmp?.path());
            }
            let mut usage = Usage::default();
            for entry in list_dir(&scan_dir)? {
                usage.records += 1;
                usage.bytes += entry.bytes;
            }
            Ok(usage)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        metrics::gauge!(OUTBOX_MAX_BYTES).set(max_bytes as f64);
        let outbox = Self { dir, max_bytes, usage: Mutex::new(usage), written: Notify::new() };
        outbox.publish(usage);
        if usage.records > 0 {
            tracing::info!(
                records = usage.records,
                bytes = usage.bytes,
                "outbox has pending records"
            );
        }
        Ok(outbox)
    }

    /// The outbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Pending records right now.
    pub fn records(&self) -> u64 {
        self.usage.lock().expect("outbox usage lock").records
    }

    /// Writes a record durably (fsync of file and directory). Returns only once the
    /// record would survive a crash. A full outbox refuses the record, counts it and
    /// logs it in full at error level, so it is never silently lost.
    pub async fn write(&self, record: &ConversationRecord) -> Result<(), OutboxError> {
        let bytes = format::encode(record);
        let need = bytes.len() as u64;
        {
            let mut usage = self.usage.lock().expect("outbox usage lock");
            if usage.bytes + need > self.max_bytes {
                let (used, max) = (usage.bytes, self.max_bytes);
                drop(usage);
                metrics::counter!(OUTBOX_REFUSED).increment(1);
                tracing::error!(
                    conversation = %record.conversation_id,
                    used, max, need,
                    record = %serde_json::to_string(record).unwrap_or_default(),
                    "outbox full: conversation NOT stored; the record is in this log line"
                );
                return Err(OutboxError::Full { used, max, need });
            }
            usage.records += 1;
            usage.bytes += need;
        }
        let name = format::file_name(record);
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || write_durably(&dir, &name, &bytes))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        match written {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    // The same conversation was already pending; it was replaced.
                    self.account(-1, -(old as i64));
                } else {
                    self.account(0, 0);
                }
                self.written.notify_one();
                Ok(())
            }
            Err(error) => {
                self.account(-1, -(need as i64));
                metrics::counter!(OUTBOX_WRITE_ERRORS).increment(1);
                tracing::error!(
                    conversation = %record.conversation_id,
                    %error,
                    record = %serde_json::to_string(record).unwrap_or_default(),
                    "outbox write failed: conversation NOT stored; the record is in this log line"
                );
                Err(OutboxError::Io(error))
            }
        }
    }

    /// Pending records, oldest first.
    pub async fn list(&self) -> Result<Vec<Entry>, OutboxError> {
        let dir = self.dir.clone();
        Ok(tokio::task::spawn_blocking(move || list_dir(&dir))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??)
    }

    /// Reads one record. A corrupt file is moved to `quarantine/` and counted.
    pub async fn read(&self, entry: &Entry) -> Result<ConversationRecord, OutboxError> {
        let path = entry.path.clone();
        let data = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        match format::decode(&data) {
            Ok(record) => Ok(record),
            Err(reason) => {
                let moved = self.quarantine(entry).await?;
                Err(OutboxError::Corrupt { path: moved, reason: reason.to_string() })
            }
        }
    }

    /// Moves a file out of the pending set into `quarantine/`.
    pub async fn quarantine(&self, entry: &Entry) -> Result<PathBuf, OutboxError> {
        let from = entry.path.clone();
        let to = self.dir.join("quarantine").join(from.file_name().unwrap_or_default());
        let target = to.clone();
        tokio::task::spawn_blocking(move || std::fs::rename(from, target))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.account(-1, -(entry.bytes as i64));
        metrics::counter!(OUTBOX_QUARANTINED).increment(1);
        tracing::error!(file = %to.display(), "outbox file quarantined");
        Ok(to)
    }

    /// Deletes a delivered record.
    pub async fn remove(&self, entry: &Entry) -> Result<(), OutboxError> {
        let path = entry.path.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.account(-1, -(entry.bytes as i64));
        Ok(())
    }

    /// Waits until a record is written.
    pub async fn written(&self) {
        self.written.notified().await;
    }

    fn account(&self, records: i64, bytes: i64) {
        let usage = {
            let mut usage = self.usage.lock().expect("outbox usage lock");
            usage.records = usage.records.saturating_add_signed(records);
            usage.bytes = usage.bytes.saturating_add_signed(bytes);
            *usage
        };
        self.publish(usage);
    }

    fn publish(&self, usage: Usage) {
        metrics::gauge!(OUTBOX_RECORDS).set(usage.records as f64);
        metrics::gauge!(OUTBOX_BYTES).set(usage.bytes as f64);
    }
}

/// Writes `tmp/<name>`, fsyncs it, renames it into `dir`, fsyncs `dir`. Returns the
/// size of a file it replaced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<Option<u64>> {
    let tmp = dir.join("tmp").join(name);
    let target = dir.join(name);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    let replaced = std::fs::metadata(&target).ok().map(|m| m.len());
    std::fs::rename(&tmp, &target)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(replaced)
}

fn list_dir(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let path = item.path();
        if path.extension().is_some_and(|e| e == format::EXTENSION) && item.file_type()?.is_file() {
            entries.push(Entry { bytes: item.metadata()?.len(), path });
        }
    }
    // Names start with the zero-padded finish time: oldest first.
    entries.sort();
    Ok(entries)
}
