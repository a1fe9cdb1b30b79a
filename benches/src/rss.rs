//! Resident set size of this process, or of another service's processes, for memory-per-vector figures (Linux
//! `/proc`; `None` elsewhere).

/// Current resident set size of this process in bytes.
pub fn resident_bytes() -> Option<u64> {
    statm_resident("/proc/self/statm")
}

fn statm_resident(path: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(path).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The summed resident set size of every process in process group `pgid` (a service started in its own
/// group, as scripts/milvus.sh starts Milvus: launcher, server and embedded etcd together).
pub fn group_resident_bytes(pgid: u32) -> Option<u64> {
    let mut total = 0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid pgrp ...", where comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if rest
            .split_whitespace()
            .nth(2)
            .and_then(|g| g.parse::<u32>().ok())
            == Some(pgid)
        {
            if let Some(bytes) = statm_resident(&format!("/proc/{pid}/statm")) {
                total += bytes;
                found = true;
            }
        }
    }
    found.then_some(total)
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

    #[test]
    fn own_group_includes_this_process() {
        let Some(own) = super::resident_bytes() else {
            return;
        };
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let pgid: u32 = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        let group = super::group_resident_bytes(pgid).expect("this process is in its own group");
        assert!(group >= own / 2, "group {group} vs own {own}");
        assert_eq!(super::group_resident_bytes(u32::MAX), None);
    }
}
