//! Finds servers left behind by test processes that died without dropping them,
//! and stops and deletes them. Every server directory holds an `owner` file with
//! the owning process's pid and start time; a directory whose owner is gone is
//! stale.

use std::path::{Path, PathBuf};

/// Writes `owner` into a new server directory: `"<pid> <start time>"` of this
/// process, renamed into place so a concurrent reaper never reads half of it.
pub(super) fn stamp_owner(dir: &Path) {
    let pid = std::process::id();
    let stamp = format!("{pid} {}", start_time(pid).unwrap_or_default());
    let partial = dir.join("owner.partial");
    std::fs::write(&partial, stamp).expect("owner stamp");
    std::fs::rename(&partial, dir.join("owner")).expect("owner stamp");
}

/// Start time of a process (field 22 of `/proc/<pid>/stat`), if it exists.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_owned)
}

fn owner_alive(dir: &Path) -> bool {
    let Ok(stamp) = std::fs::read_to_string(dir.join("owner")) else {
        // No stamp yet: a server being set up right now. Leave it.
        return true;
    };
    // Only a stamp that names a process which is gone (or was replaced: another
    // start time) is stale; anything unreadable is left alone.
    let mut parts = stamp.split_whitespace();
    let (Some(pid), Some(started)) = (parts.next(), parts.next()) else { return true };
    let Ok(pid) = pid.parse::<u32>() else { return true };
    start_time(pid).is_some_and(|now| now == started)
}

/// Directories in the temp dir named `<prefix>…` whose owner is dead.
pub(super) fn stale(prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| entry.path())
        .filter(|dir| dir.is_dir() && !owner_alive(dir))
        .collect()
}

/// Kills the process in `pid_file` (its first line) if it still runs `program`.
pub(super) fn kill_pid_file(pid_file: &Path, program: &str) {
    let Ok(text) = std::fs::read_to_string(pid_file) else { return };
    let Some(pid) = text.lines().next().and_then(|line| line.trim().parse::<u32>().ok()) else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(program) {
        let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}
