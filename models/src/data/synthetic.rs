//! The project's own synthetic image generator, for tests that need a learnable data set in seconds.
//!
//! Each class is an oriented bar (angle `class * 180 / classes` degrees) plus a disc whose radius grows with
//! the class; each sample jitters position, thickness and brightness and adds pixel noise. Images are 8-bit
//! grayscale like Fashion-MNIST, so they take exactly the same preprocessing path.

use super::LabelledImages;

/// Generates `n` images of `size x size` pixels over `classes` classes (balanced, interleaved), reproducibly.
pub fn generate(n: usize, classes: usize, size: usize, seed: u64) -> LabelledImages {
    assert!(
        classes > 0 && classes <= 256 && size >= 8,
        "synthetic: classes 1..=256, size >= 8"
    );
    let mut rng = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut unit = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f32 / (1u64 << 53) as f32
    };
    let s = size as f32;
    let mut pixels = Vec::with_capacity(n * size * size);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % classes;
        let angle = std::f32::consts::PI * class as f32 / classes as f32;
        let (dx, dy) = (angle.cos(), angle.sin());
        let cx = s / 2.0 + (unit() - 0.5) * s * 0.2;
        let cy = s / 2.0 + (unit() - 0.5) * s * 0.2;
        let half_width = s * (0.05 + 0.04 * unit());
        let radius = s * (0.08 + 0.25 * class as f32 / classes as f32);
        let (ox, oy) = (s * (0.2 + 0.6 * unit()), s * (0.2 + 0.6 * unit()));
        let brightness = 150.0 + 100.0 * unit();
        for y in 0..size {
            for x in 0..size {
                let (px, py) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                // Distance from the bar's centre line.
                let bar =
                    (px * dy - py * dx).abs() < half_width && (px * dx + py * dy).abs() < s * 0.4;
                let disc = ((x as f32 - ox).powi(2) + (y as f32 - oy).powi(2)).sqrt() < radius;
                let base = if bar {
                    brightness
                } else if disc {
                    brightness * 0.5
                } else {
                    0.0
                };
                pixels.push((base + 40.0 * unit()).min(255.0) as u8);
            }
        }
        labels.push(class as u8);
    }
    LabelledImages {
        rows: size,
        cols: size,
        pixels,
        labels,
    }
}

/// A photo-like RGB scene of `w x h` pixels, reproducible from `seed`: smooth gradients, discs and stripes, and
/// mild sensor noise, so a JPEG of it has a phone photo's size (about 4 MB at 12 MP, quality 90). For decode and
/// serving benchmarks and tests at real photo sizes.
pub fn photo(w: u32, h: u32, seed: u32) -> image::RgbImage {
    let mut state = seed as u64 * 0x9E37_79B9 + 1;
    let s = seed as f32;
    image::RgbImage::from_fn(w, h, |x, y| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let noise = ((state >> 60) as f32) - 8.0;
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let disc = |cx: f32, cy: f32, r: f32| {
            f32::from(u8::from((fx - cx).powi(2) + (fy - cy).powi(2) < r * r))
        };
        let stripe = f32::from(u8::from((fx * (12.0 + s)).sin() > 0.6));
        let r = 60.0 + 150.0 * fx + 60.0 * disc(0.3 + 0.1 * s, 0.4, 0.15) + noise;
        let g = 40.0 + 120.0 * fy + 80.0 * stripe + noise;
        let b = 90.0 + 100.0 * (1.0 - fx) * fy - 70.0 * disc(0.7, 0.6 - 0.05 * s, 0.2) + noise;
        image::Rgb([
            r.clamp(0.0, 255.0) as u8,
            g.clamp(0.0, 255.0) as u8,
            b.clamp(0.0, 255.0) as u8,
        ])
    })
}

/// [`photo`] as a JPEG of the given quality.
pub fn photo_jpeg(w: u32, h: u32, seed: u32, quality: u8) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
        .encode_image(&photo(w, h, seed))
        .expect("encoding a JPEG in memory");
    buf.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_balanced_and_class_dependent() {
        let a = generate(40, 4, 16, 1);
        assert_eq!(a.pixels, generate(40, 4, 16, 1).pixels);
        assert_ne!(a.pixels, generate(40, 4, 16, 2).pixels);
        assert_eq!(a.len(), 40);
        assert_eq!(a.labels.iter().filter(|&&l| l == 3).count(), 10);
        // Class means differ: the mean image of class 0 is not that of class 2.
        let mean = |c: u8| -> Vec<f32> {
            let idx: Vec<usize> = (0..a.len()).filter(|&i| a.labels[i] == c).collect();
            (0..256)
                .map(|p| idx.iter().map(|&i| a.image(i)[p] as f32).sum::<f32>() / idx.len() as f32)
                .collect()
        };
        let d: f32 = mean(0)
            .iter()
            .zip(mean(2))
            .map(|(x, y)| (x - y).abs())
            .sum::<f32>()
            / 256.0;
        assert!(d > 10.0, "mean abs difference {d}");
    }
}
