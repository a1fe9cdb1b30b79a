//! Does the scaled JPEG decode change retrieval? Fashion-MNIST test images are sent as JPEGs, once at their own
//! 28 px and once enlarged to a photo's size, and preprocessed two ways: the reference path (the whole JPEG
//! decoded at full size by the `image` crate, then cropped and resized) and the serving path
//! (`preprocess_bytes`: libjpeg-turbo at the smallest DCT scale still covering the model's input). Both
//! embeddings search the same gallery (training images, embedded from their raw pixels as `hetvis-index` does);
//! reported: the share of queries whose top-1 gallery hit is the same, the top-10 overlap, the embedding cosine
//! between the paths, and top-1 label accuracy under each. For scale, the same image sent losslessly (PNG) is
//! compared with the reference JPEG path: how much top-1 moves under JPEG compression itself.
//!
//! The model is a random-weight ResNet-18 x0.5 with the small stem at the `cpu` preset's 32 px (or `--model`,
//! a trained hetvis gallery or query model whose manifest sets the preprocessing).
//!
//! target/release/photo-agreement --json runs/bench/photo-agreement.json

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use hetvis_benches::gallery_model::export_random;
use hetvis_models::arch::resnet::ResNetSpec;
use hetvis_models::arch::{Backbone, ModelSpec, Stem};
use hetvis_models::data::fashion_mnist::FashionMnist;
use hetvis_models::data::Split;
use hetvis_models::embed::Embedder;
use hetvis_models::manifest::Role;
use hetvis_models::preprocess::{
    decode, preprocess_bytes, preprocess_gray, preprocess_into, ImageLimits, Preprocessing,
};
use hetvis_models::runtime::{self, SessionConfig};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    about = "Top-1 agreement of retrieval between the full-size and the DCT-scaled JPEG decode"
)]
struct Cli {
    /// Test images used as queries (the first N).
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Training images in the gallery (the first N).
    #[arg(long, default_value_t = 10_000)]
    gallery: usize,
    /// Sides the queries are sent at: 28 is the images' own size, larger ones are enlarged (bilinear) first.
    #[arg(long, value_delimiter = ',', default_value = "28,1024")]
    sides: Vec<u32>,
    #[arg(long, default_value_t = 90)]
    quality: u8,
    /// A hetvis ONNX model to use instead of the random-weight ResNet-18.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the random-weight model is written.
    #[arg(long, default_value = "runs/bench/agreement")]
    work: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn embed_all(e: &mut Embedder, inputs: &[f32], per: usize) -> anyhow::Result<Vec<f32>> {
    let mut out = Vec::with_capacity(inputs.len() / per * e.dim());
    for chunk in inputs.chunks(per * 64) {
        out.extend(e.embed(chunk)?);
    }
    Ok(out)
}

/// The `k` best gallery rows for one query, best first (exact inner product).
fn top_k(gallery: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = gallery
        .chunks(dim)
        .enumerate()
        .map(|(i, g)| (g.iter().zip(q).map(|(a, b)| a * b).sum(), i))
        .collect();
    scored.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
    scored.truncate(k);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, i)| i).collect()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::init(None)?;
    let model_path = match &cli.model {
        Some(p) => p.clone(),
        None => {
            std::fs::create_dir_all(&cli.work)?;
            let path = cli.work.join("resnet18-x0.5-32px.onnx");
            let mut resnet = ResNetSpec::new(18);
            resnet.width = 0.5;
            resnet.stem = Stem::Small;
            let spec = ModelSpec::new(Backbone::Resnet(resnet), 32, 64);
            let p = Preprocessing::fashion_mnist(32);
            export_random(&path, "agreement", Role::Gallery, &spec, p, "agreement", 5)?;
            path
        }
    };
    let mut e = Embedder::load(&model_path, &SessionConfig::default())?;
    let p = e.manifest().preprocessing.clone();
    let per = p.numel();
    let dim = e.dim();
    let fm = FashionMnist::from_env();
    let train = fm
        .load(Split::Train)
        .with_context(|| format!("Fashion-MNIST under {}", fm.root().display()))?;
    let test = fm.load(Split::Test)?;
    let (ng, nq) = (cli.gallery.min(train.len()), cli.queries.min(test.len()));

    let mut inputs = Vec::with_capacity(ng * per);
    for i in 0..ng {
        preprocess_gray(train.image(i), 28, 28, &p, &mut inputs);
    }
    let gallery = embed_all(&mut e, &inputs, per)?;
    eprintln!("gallery: {ng} training images embedded");

    let mut results = Vec::new();
    for &side in &cli.sides {
        let t = Instant::now();
        let (mut reference, mut serving, mut lossless) = (Vec::new(), Vec::new(), Vec::new());
        let mut bytes_total = 0usize;
        for i in 0..nq {
            let img =
                image::GrayImage::from_raw(28, 28, test.image(i).to_vec()).context("image size")?;
            let img = if side == 28 {
                img
            } else {
                image::imageops::resize(&img, side, side, image::imageops::FilterType::Triangle)
            };
            let mut jpeg = std::io::Cursor::new(Vec::new());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, cli.quality)
                .encode_image(&img)?;
            let jpeg = jpeg.into_inner();
            bytes_total += jpeg.len();
            preprocess_into(&decode(&jpeg, ImageLimits::default())?, &p, &mut reference);
            serving.extend(preprocess_bytes(&jpeg, &p, ImageLimits::default())?);
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png)?;
            lossless.extend(preprocess_bytes(png.get_ref(), &p, ImageLimits::default())?);
        }
        let a = embed_all(&mut e, &reference, per)?;
        let b = embed_all(&mut e, &serving, per)?;
        let c = embed_all(&mut e, &lossless, per)?;
        let (mut same_top1, mut overlap10, mut correct_a, mut correct_b) = (0usize, 0usize, 0, 0);
        let (mut same_top1_lossless, mut correct_c) = (0usize, 0usize);
        let mut cosines = Vec::with_capacity(nq);
        for q in 0..nq {
            let (qa, qb) = (&a[q * dim..(q + 1) * dim], &b[q * dim..(q + 1) * dim]);
            cosines.push(qa.iter().zip(qb).map(|(x, y)| x * y).sum::<f32>() as f64);
            let (ta, tb) = (top_k(&gallery, dim, qa, 10), top_k(&gallery, dim, qb, 10));
            same_top1 += usize::from(ta[0] == tb[0]);
            overlap10 += ta.iter().filter(|r| tb.contains(r)).count();
            correct_a += usize::from(train.labels[ta[0]] == test.labels[q]);
            correct_b += usize::from(train.labels[tb[0]] == test.labels[q]);
            let tc = top_k(&gallery, dim, &c[q * dim..(q + 1) * dim], 1);
            same_top1_lossless += usize::from(ta[0] == tc[0]);
            correct_c += usize::from(train.labels[tc[0]] == test.labels[q]);
        }
        let mean_cos = cosines.iter().sum::<f64>() / nq as f64;
        let min_cos = cosines.iter().copied().fold(f64::INFINITY, f64::min);
        let cell = json!({
            "side": side,
            "queries": nq,
            "mean_jpeg_bytes": bytes_total / nq.max(1),
            "top1_agreement": same_top1 as f64 / nq as f64,
            "top10_overlap": overlap10 as f64 / (10 * nq) as f64,
            "embedding_cosine_mean": mean_cos,
            "embedding_cosine_min": min_cos,
            "top1_label_accuracy_reference": correct_a as f64 / nq as f64,
            "top1_label_accuracy_serving": correct_b as f64 / nq as f64,
            "top1_agreement_jpeg_vs_lossless": same_top1_lossless as f64 / nq as f64,
            "top1_label_accuracy_lossless": correct_c as f64 / nq as f64,
            "seconds": t.elapsed().as_secs_f64(),
        });
        eprintln!("{cell}");
        results.push(cell);
    }
    println!("\n| query side | JPEG bytes | top-1 agreement | top-10 overlap | cosine mean / min | top-1 label acc. reference / serving / lossless | top-1 agreement JPEG vs lossless |");
    println!("|---|---|---|---|---|---|---|");
    let f = |v: &Value, p: usize| v.as_f64().map_or("-".into(), |x| format!("{x:.p$}"));
    for c in &results {
        println!(
            "| {} | {} | {} | {} | {} / {} | {} / {} / {} | {} |",
            c["side"],
            c["mean_jpeg_bytes"],
            f(&c["top1_agreement"], 4),
            f(&c["top10_overlap"], 4),
            f(&c["embedding_cosine_mean"], 5),
            f(&c["embedding_cosine_min"], 5),
            f(&c["top1_label_accuracy_reference"], 4),
            f(&c["top1_label_accuracy_serving"], 4),
            f(&c["top1_label_accuracy_lossless"], 4),
            f(&c["top1_agreement_jpeg_vs_lossless"], 4),
        );
    }
    if let Some(path) = &cli.json {
        let out = json!({
            "model": model_path, "model_name": e.manifest().name, "input_px": p.size,
            "gallery": ng, "quality": cli.quality, "results": results,
        });
        hetvis_benches::write_json(path, &out)?;
    }
    Ok(())
}
