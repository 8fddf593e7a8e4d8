//! What `/proc` says about a process (the benches' memory tables).

/// VmRSS and VmHWM (KiB) of process `pid`; zeros when it cannot be read.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system, all threads) process `pid` has used; `None` when it
/// cannot be read (the process is gone).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, may hold spaces) come state, ppid, pgrp,
    // session, tty_nr, tpgid, flags, minflt, cminflt, majflt, cmajflt, utime, stime:
    // fields are taken by position, since some (state, tpgid = -1) are not unsigned.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((utime + stime) as f64 / 100.0)
}

/// CPU seconds used so far by every live process whose command name is `comm`
/// (for example all of PostgreSQL's backends, or the S3 server), by pid.
pub fn cpu_secs_by_name(comm: &str) -> std::collections::HashMap<u32, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if name.trim_end() == comm {
            if let Some(s) = cpu_secs(pid) {
                out.insert(pid, s);
            }
        }
    }
    out
}

/// CPU seconds the processes named `comm` used between two `cpu_secs_by_name`
/// snapshots (processes that started in between count from zero).
pub fn cpu_secs_between(
    before: &std::collections::HashMap<u32, f64>,
    after: &std::collections::HashMap<u32, f64>,
) -> f64 {
    after
        .iter()
        .map(|(pid, s)| s - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}
