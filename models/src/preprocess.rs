//! The one image-preprocessing function, used by the trainer, the indexer and the server alike.
//!
//! decode (PNG, JPEG, WebP, BMP, GIF first frame; EXIF orientation applied; JPEG decoded at the DCT scale the
//! model needs) -> grayscale/alpha to the model's channels -> crop -> resize -> normalise -> NCHW f32.
//!
//! Resize: the centre square of the image (side = its shorter side) is cropped first, then scaled to the model
//! input in one step with a bilinear (triangle) filter whose support widens when shrinking, so downscaling is
//! anti-aliased. This keeps the aspect ratio (no stretching of non-square photos), equals a plain resize for
//! square images such as Fashion-MNIST, and bounds memory after decoding by the decoder's own limits: no buffer
//! is ever larger than the decoded image or the centre square (a 1 x 4096 strip is never scaled to 224 x 917504
//! first). Alpha is composited onto white (product photos are usually on white).

use std::io::Cursor;

use image::metadata::Orientation;
use image::{
    DynamicImage, GenericImageView, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Square side the model takes, in pixels.
    pub size: usize,
    /// 3 (RGB) or 1 (luma).
    pub channels: usize,
    /// Per-channel mean and standard deviation, on 0..1 pixel values.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Preprocessing {
    /// Fashion-MNIST statistics (grayscale replicated to RGB): mean 0.286, std 0.353.
    pub fn fashion_mnist(size: usize) -> Self {
        Self {
            size,
            channels: 3,
            mean: vec![0.286; 3],
            std: vec![0.353; 3],
        }
    }

    /// ImageNet statistics, for users' own photos.
    pub fn imagenet(size: usize) -> Self {
        Self {
            size,
            channels: 3,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Floats per preprocessed image.
    pub fn numel(&self) -> usize {
        self.channels * self.size * self.size
    }

    pub fn validate(&self) -> Result<(), PreprocessError> {
        let ok = (self.channels == 1 || self.channels == 3)
            && self.size > 0
            && self.mean.len() == self.channels
            && self.std.len() == self.channels
            && self.std.iter().all(|s| *s > 0.0);
        if ok {
            Ok(())
        } else {
            Err(PreprocessError::Config(format!("{self:?}")))
        }
    }
}

/// Bounds on what an untrusted image may make the decoder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_width: u32,
    pub max_height: u32,
    /// Most bytes the decoder may allocate.
    pub max_alloc: u64,
}

impl ImageLimits {
    /// Most bytes decoding plus preprocessing one image may hold at once under these limits, at input `p`: the
    /// decoder's buffer (`max_alloc`, which `image` enforces), a copy of the centre square in the decoded
    /// pixel type (at most the same) and as RGBA and RGB (7 bytes per pixel), the resize's intermediate rows
    /// (RGBA f32), the resized image and the output floats, plus 1 MiB for the decoders' own tables.
    pub fn peak_bytes(&self, p: &Preprocessing) -> u64 {
        let max_side = (self.max_alloc as f64).sqrt() as u64;
        let side = u64::from(self.max_width.min(self.max_height)).min(max_side);
        let size = p.size as u64;
        2 * self.max_alloc
            + 7 * side * side
            + 16 * side * size
            + 3 * size * size
            + 4 * p.numel() as u64
            + (1 << 20)
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_width: 8192,
            max_height: 8192,
            max_alloc: 256 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PreprocessError {
    #[error("empty image (zero bytes)")]
    Empty,
    #[error("not an image, or an unsupported format (PNG, JPEG, WebP, BMP and GIF are supported)")]
    UnknownFormat,
    #[error("image exceeds the limits ({0})")]
    TooLarge(String),
    #[error("truncated image data")]
    Truncated,
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("invalid preprocessing settings: {0}")]
    Config(String),
}

impl From<image::ImageError> for PreprocessError {
    fn from(e: image::ImageError) -> Self {
        use image::ImageError as E;
        match e {
            E::Limits(l) => PreprocessError::TooLarge(l.to_string()),
            E::Unsupported(_) => PreprocessError::UnknownFormat,
            E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                PreprocessError::Truncated
            }
            E::Decoding(d) if d.to_string().to_lowercase().contains("eof") => {
                PreprocessError::Truncated
            }
            other => PreprocessError::Decode(other.to_string()),
        }
    }
}

/// Decodes untrusted bytes within `limits`, at full size, upright (an EXIF orientation is applied). The header is
/// checked against the size limits before any pixel buffer is allocated, so a 100k x 100k header or a
/// decompression bomb is an error, not an allocation.
pub fn decode(bytes: &[u8], limits: ImageLimits) -> Result<DynamicImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(PreprocessError::UnknownFormat);
    }
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_width);
    l.max_image_height = Some(limits.max_height);
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    if decoder.total_bytes() > limits.max_alloc {
        return Err(PreprocessError::TooLarge(format!(
            "decoding needs {} bytes; the limit is {}",
            decoder.total_bytes(),
            limits.max_alloc
        )));
    }
    let mut img = DynamicImage::from_decoder(decoder)?;
    if img.width() == 0 || img.height() == 0 {
        return Err(PreprocessError::Decode("image has no pixels".into()));
    }
    img.apply_orientation(orientation);
    Ok(img)
}

/// Decodes untrusted bytes for a model whose input side is `min_side`, upright: a JPEG at the smallest DCT scale
/// whose shorter side is still at least `min_side` ([`crate::jpeg`]), other formats as [`decode`].
pub fn decode_for(
    bytes: &[u8],
    limits: ImageLimits,
    min_side: u32,
) -> Result<DynamicImage, PreprocessError> {
    if image::guess_format(bytes).ok() != Some(ImageFormat::Jpeg) {
        return decode(bytes, limits);
    }
    let mut img = crate::jpeg::decode_scaled(bytes, limits, min_side)?;
    if let Some(o) = crate::jpeg::exif_orientation(bytes) {
        img.apply_orientation(o);
    }
    Ok(img)
}

/// Flattens alpha onto white and converts to 8-bit RGB.
fn to_rgb(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        let blend = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([blend(p[0]), blend(p[1]), blend(p[2])])
    })
}

/// Preprocesses a decoded image into `p.numel()` floats, channel-major (CHW), appended to `out`.
pub fn preprocess_into(img: &DynamicImage, p: &Preprocessing, out: &mut Vec<f32>) {
    let size = p.size as u32;
    let (w, h) = img.dimensions();
    // Crop before resizing, so nothing larger than the decoded image is ever allocated.
    let side = w.min(h);
    let cropped;
    let square = if w == h {
        img
    } else {
        cropped = img.crop_imm((w - side) / 2, (h - side) / 2, side, side);
        &cropped
    };
    let rgb = to_rgb(square);
    let resized = if side == size {
        rgb
    } else {
        image::imageops::resize(&rgb, size, size, image::imageops::FilterType::Triangle)
    };
    let plane = p.size * p.size;
    let start = out.len();
    out.resize(start + p.numel(), 0.0);
    let dst = &mut out[start..];
    for (i, px) in resized.pixels().enumerate() {
        let [r, g, b] = px.0;
        if p.channels == 1 {
            // ITU-R BT.601 luma, as `image` computes it.
            let y = (0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32) / 255.0;
            dst[i] = (y - p.mean[0]) / p.std[0];
        } else {
            for (c, v) in [r, g, b].into_iter().enumerate() {
                dst[c * plane + i] = (v as f32 / 255.0 - p.mean[c]) / p.std[c];
            }
        }
    }
}

/// Decodes and preprocesses untrusted bytes: one image as `p.numel()` CHW floats.
pub fn preprocess_bytes(
    bytes: &[u8],
    p: &Preprocessing,
    limits: ImageLimits,
) -> Result<Vec<f32>, PreprocessError> {
    p.validate()?;
    let img = decode_for(bytes, limits, p.size as u32)?;
    let mut out = Vec::with_capacity(p.numel());
    preprocess_into(&img, p, &mut out);
    Ok(out)
}

/// Preprocesses a raw 8-bit grayscale image (e.g. a Fashion-MNIST record) through the same path as a decoded file.
pub fn preprocess_gray(
    pixels: &[u8],
    width: u32,
    height: u32,
    p: &Preprocessing,
    out: &mut Vec<f32>,
) {
    let img = image::GrayImage::from_raw(width, height, pixels.to_vec())
        .expect("pixel count matches dimensions");
    preprocess_into(&DynamicImage::ImageLuma8(img), p, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgba, RgbaImage};

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, format).unwrap();
        buf.into_inner()
    }

    fn unit(size: usize, channels: usize) -> Preprocessing {
        Preprocessing {
            size,
            channels,
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    #[test]
    fn decodes_every_supported_format_to_the_same_pixels() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, 128])
        }));
        let reference = preprocess_bytes(
            &encode(&img, ImageFormat::Png),
            &unit(16, 3),
            ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(reference.len(), 3 * 16 * 16);
        assert!(
            (reference[16 + 1] - 16.0 / 255.0).abs() < 1e-6,
            "R of pixel (1, 1)"
        );
        assert!(
            (reference[256 + 16 + 1] - 16.0 / 255.0).abs() < 1e-6,
            "G of pixel (1, 1)"
        );
        for format in [ImageFormat::Bmp, ImageFormat::WebP, ImageFormat::Gif] {
            let got = preprocess_bytes(&encode(&img, format), &unit(16, 3), ImageLimits::default())
                .unwrap();
            let max = got
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            // GIF quantises to a 256-colour palette.
            assert!(max < 0.1, "{format:?}: max diff {max}");
        }
        let jpeg = preprocess_bytes(
            &encode(&img, ImageFormat::Jpeg),
            &unit(16, 3),
            ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(jpeg.len(), reference.len());
    }

    #[test]
    fn gray_and_alpha_become_rgb_and_normalisation_applies() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([51])));
        let p = Preprocessing {
            size: 4,
            channels: 3,
            mean: vec![0.1, 0.2, 0.3],
            std: vec![0.5, 0.5, 0.5],
        };
        let v =
            preprocess_bytes(&encode(&gray, ImageFormat::Png), &p, ImageLimits::default()).unwrap();
        for (c, m) in [0.1f32, 0.2, 0.3].iter().enumerate() {
            assert!((v[c * 16] - (0.2 - m) / 0.5).abs() < 1e-6);
        }
        // Fully transparent black is white after compositing.
        let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 0])));
        let v = preprocess_bytes(
            &encode(&clear, ImageFormat::Png),
            &unit(4, 3),
            ImageLimits::default(),
        )
        .unwrap();
        assert!(v.iter().all(|&x| (x - 1.0).abs() < 1e-6));
    }

    #[test]
    fn resizes_shorter_side_and_crops_the_centre() {
        // 60 x 20: the left 10 columns red, the rest blue. Scaled to 30 x 10 (red is x < 5), the centre crop
        // takes x = 10..20, all blue: the red margin is cropped away, not squeezed in.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(60, 20, |x, _| {
            if x < 10 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        }));
        let mut out = Vec::new();
        preprocess_into(&img, &unit(10, 3), &mut out);
        assert_eq!(out.len(), 300);
        // Every column of the crop lies in the blue part of the original.
        assert!(out[..100].iter().all(|&r| r < 0.05), "red plane");
        assert!(out[200..].iter().all(|&b| b > 0.95), "blue plane");
    }

    #[test]
    fn grayscale_model_input_uses_luma() {
        let mut out = Vec::new();
        preprocess_gray(&[0, 255, 255, 0], 2, 2, &unit(2, 1), &mut out);
        assert_eq!(out, vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn hostile_inputs_are_typed_errors() {
        let p = unit(8, 3);
        let lim = ImageLimits::default();
        assert_eq!(preprocess_bytes(&[], &p, lim), Err(PreprocessError::Empty));
        assert_eq!(
            preprocess_bytes(b"hello, not an image", &p, lim),
            Err(PreprocessError::UnknownFormat)
        );
        let png = encode(
            &DynamicImage::ImageRgb8(RgbImage::new(64, 64)),
            ImageFormat::Png,
        );
        assert!(matches!(
            preprocess_bytes(&png[..png.len() / 2], &p, lim),
            Err(PreprocessError::Truncated | PreprocessError::Decode(_))
        ));
        // Over the dimension limit.
        let small = ImageLimits {
            max_width: 32,
            max_height: 32,
            max_alloc: 1 << 20,
        };
        assert!(matches!(
            preprocess_bytes(&png, &p, small),
            Err(PreprocessError::TooLarge(_))
        ));
    }

    #[test]
    fn a_huge_header_is_refused_without_allocating() {
        // A valid PNG signature and IHDR claiming 100000 x 100000 RGB, then nothing.
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        let err = preprocess_bytes(&png, &unit(8, 3), ImageLimits::default()).unwrap_err();
        assert!(matches!(err, PreprocessError::TooLarge(_)), "{err:?}");
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
