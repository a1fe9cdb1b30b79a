//! Peak memory of decoding + preprocessing, measured with a counting allocator. One test per binary: the
//! allocator is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};

use hetvis_models::preprocess::{preprocess_bytes, ImageLimits, Preprocessing};

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

/// Bytes allocated on top of what was live before `f` ran, at its highest.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - base)
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 7])
    });
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

#[test]
fn thin_strips_cost_kilobytes_not_the_upscaled_strip() {
    let p = Preprocessing::imagenet(224);
    let limits = ImageLimits::default();
    // The floats handed back (602 KB) plus the 224 x 224 RGB image and small change: well under 2 MiB. Scaling
    // the shorter side to 224 first would allocate 224 x 917504 RGB pixels (617 MB) for either strip.
    let budget = 2 << 20;
    for (w, h) in [(1, 4096), (4096, 1)] {
        let bytes = png(w, h);
        let (out, peak) = peak_during(|| preprocess_bytes(&bytes, &p, limits));
        assert_eq!(out.unwrap().len(), p.numel());
        assert!(peak < budget, "{w} x {h}: peak {peak} bytes");
        assert!((peak as u64) < limits.peak_bytes(&p));
    }
    // A large square photo stays within the documented bound too.
    let bytes = png(2048, 1536);
    let (out, peak) = peak_during(|| preprocess_bytes(&bytes, &p, limits));
    assert_eq!(out.unwrap().len(), p.numel());
    assert!((peak as u64) < limits.peak_bytes(&p), "peak {peak}");
}
