//! Retrieval metrics at the evaluation's size: 10,000 queries x 10,000 gallery, dim 128, leave-one-out,
//! top-k + mAP@R + TAR@FAR (the full report) and top-k + mAP@R alone.

use criterion::{criterion_group, criterion_main, Criterion};
use hetvis_models::metrics::{evaluate, Labelled, MetricsConfig};

fn synthetic(n: usize, dim: usize, classes: u32) -> (Vec<f32>, Vec<u32>) {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let centres: Vec<f32> = (0..classes as usize * dim).map(|_| next()).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % classes).collect();
    let mut v = Vec::with_capacity(n * dim);
    for &l in &labels {
        let row: Vec<f32> = (0..dim)
            .map(|d| centres[l as usize * dim + d] + 0.8 * next())
            .collect();
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.extend(row.iter().map(|x| x / norm));
    }
    (v, labels)
}

fn bench(c: &mut Criterion) {
    let (v, labels) = synthetic(10_000, 128, 10);
    let e = Labelled::new(&v, &labels, 128);
    let mut g = c.benchmark_group("metrics_10k_x_10k_d128");
    g.sample_size(10);
    let full = MetricsConfig {
        leave_one_out: true,
        ..Default::default()
    };
    g.bench_function("topk_map_tar", |b| b.iter(|| evaluate(e, e, &full)));
    let ranking = MetricsConfig {
        fars: vec![],
        ..full.clone()
    };
    g.bench_function("topk_map", |b| b.iter(|| evaluate(e, e, &ranking)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
