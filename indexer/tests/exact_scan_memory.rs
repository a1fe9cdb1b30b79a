//! The exact scan's memory, measured with a counting allocator (process-wide, so one test in this binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hetvis_indexer::flat::FlatIndex;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn an_exact_scan_allocates_for_k_hits_not_for_every_vector() {
    let (n, dim) = (200_000, 8);
    let data: Vec<f32> = (0..n * dim)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let flat = FlatIndex::from_rows(dim, data).unwrap();
    let query = vec![0.5f32; dim];
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let hits = flat.search(&query, 10);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(hits.len(), 10);
    // A score per vector would be 16 bytes x 200,000 = 3.2 MB.
    assert!(peak < 4096, "the scan allocated {peak} bytes at its peak");
}
