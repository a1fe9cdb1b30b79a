//! Resident set size of this process, for memory-per-vector figures (Linux `/proc`; `None` elsewhere).

/// Current resident set size in bytes.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // Every Linux target this project runs on uses 4 KiB pages; /proc/self/smaps would say otherwise.
    4096
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_grows_when_memory_is_touched() {
        let Some(before) = super::resident_bytes() else {
            return;
        };
        let v = vec![1u8; 64 << 20];
        let after = super::resident_bytes().unwrap();
        assert!(after >= before + (32 << 20), "{before} -> {after}");
        drop(v);
    }
}
