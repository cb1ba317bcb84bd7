//! CPU time of processes and threads, from the scheduler's exact run time
//! (`/proc/.../schedstat`, nanoseconds) rather than tick-sampled counters.

/// Run time in nanoseconds from a `schedstat` file (its first field); 0 if
/// the file cannot be read (the thread is gone).
pub fn schedstat_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Run time of every live thread of process `pid`, nanoseconds.
pub fn process_runtime_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| schedstat_ns(&format!("{}/schedstat", e.path().display())))
                .sum()
        })
        .unwrap_or(0)
}
