//! Decode + preprocess of JPEG photos at real sizes: the full-size decode (then crop and resize) against the
//! DCT-scaled decode `preprocess_bytes` uses, for a 224 px model, on one thread.
//!
//! cargo bench -p hetvis-benches --bench decode

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hetvis_models::data::synthetic::photo_jpeg;
use hetvis_models::preprocess::{
    decode, preprocess_bytes, preprocess_into, ImageLimits, Preprocessing,
};

fn bench(c: &mut Criterion) {
    let p = Preprocessing::imagenet(224);
    let limits = ImageLimits::default();
    let mut group = c.benchmark_group("jpeg-to-224px");
    group.sample_size(20);
    for (name, w, h) in [("1MP", 1200, 900), ("12MP", 4000, 3000)] {
        let bytes = photo_jpeg(w, h, 1, 90);
        eprintln!("{name}: {w} x {h} JPEG, {} bytes", bytes.len());
        group.bench_with_input(BenchmarkId::new("full-decode", name), &bytes, |b, bytes| {
            b.iter(|| {
                let img = decode(bytes, limits).unwrap();
                let mut out = Vec::with_capacity(p.numel());
                preprocess_into(&img, &p, &mut out);
                out
            })
        });
        group.bench_with_input(
            BenchmarkId::new("scaled-decode", name),
            &bytes,
            |b, bytes| b.iter(|| preprocess_bytes(bytes, &p, limits).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
