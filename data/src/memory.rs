//! This process's resident memory, read from Linux's `/proc/self/status`: what the benchmarks,
//! the trainers' metrics and the measurement examples report beside their times. `None` where
//! there is no `/proc` (other systems), so a report says "not measured" rather than 0.

/// One `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident memory now, in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS").map(|k| k * 1024)
}

/// Peak resident memory so far (the high-water mark), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    status_kib("VmHWM").map(|k| k as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_at_least_what_is_resident_now() {
        if let (Some(now), Some(peak)) = (rss_bytes(), peak_rss_mib()) {
            assert!(now > 0);
            assert!(peak * 1024.0 * 1024.0 >= now as f64 * 0.99);
        }
    }
}
