//! Photos as users send them: JPEGs of 1 and 12 megapixels, decoded at the DCT scale the model needs, must give
//! the model what a full-size decode would; EXIF orientations come out upright; a truncated JPEG is an error.

use std::io::Cursor;

use hetvis_models::arch::resnet::ResNetSpec;
use hetvis_models::arch::{Backbone, ModelSpec};
use hetvis_models::data::synthetic::photo;
use hetvis_models::embed::Embedder;
use hetvis_models::manifest::{ModelManifest, Provenance, Role};
use hetvis_models::onnx::{export, graph::to_bytes};
use hetvis_models::preprocess::{
    decode, decode_for, preprocess_bytes, preprocess_into, ImageLimits, PreprocessError,
    Preprocessing,
};
use hetvis_models::runtime::SessionConfig;
use hetvis_models::weights::Weights;
use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
        .encode_image(img)
        .unwrap();
    buf.into_inner()
}

/// Today's reference path: the whole image decoded at full size, then cropped and resized.
fn full_size(bytes: &[u8], p: &Preprocessing) -> Vec<f32> {
    let img = decode(bytes, ImageLimits::default()).unwrap();
    let mut out = Vec::new();
    preprocess_into(&img, p, &mut out);
    out
}

/// A random-weight ResNet-18 x0.5 (the gallery models' family) at `size` px.
fn embedder(size: usize) -> Embedder {
    hetvis_models::runtime::init(None).expect("ONNX Runtime (run `make setup`)");
    let mut resnet = ResNetSpec::new(18);
    resnet.width = 0.5;
    let spec = ModelSpec::new(Backbone::Resnet(resnet), size, 64);
    let manifest = ModelManifest::for_spec(
        "photo-test",
        Role::Query,
        &spec,
        Preprocessing::imagenet(size),
        "photos",
        Provenance::default(),
    )
    .unwrap();
    let weights = Weights::random(&spec.lower().unwrap(), 7);
    let bytes = to_bytes(&export(&spec, &weights, &manifest).unwrap());
    Embedder::from_bytes(
        &bytes,
        std::path::Path::new("mem.onnx"),
        &SessionConfig::default(),
    )
    .unwrap()
}

#[test]
fn scaled_jpeg_decoding_gives_the_model_what_a_full_decode_does() {
    let p = Preprocessing::imagenet(224);
    let mut model = embedder(224);
    for (i, (w, h)) in [(4000, 3000), (3000, 4000), (1200, 900), (1600, 1200)]
        .into_iter()
        .enumerate()
    {
        let bytes = jpeg(&photo(w, h, i as u32));
        // The scaled decode really is scaled: 12 MP to 500 x 375, 1 MP to 300 x 225.
        let small = decode_for(&bytes, ImageLimits::default(), 224).unwrap();
        assert!(small.width().min(small.height()) >= 224);
        assert!(
            small.width() * 4 <= w || w <= 1600,
            "{w} x {h} decoded at {}",
            small.width()
        );
        let scaled = preprocess_bytes(&bytes, &p, ImageLimits::default()).unwrap();
        let reference = full_size(&bytes, &p);
        let input_cos = cosine(&scaled, &reference);
        let a = model.embed(&scaled).unwrap();
        let b = model.embed(&reference).unwrap();
        let embed_cos = cosine(&a, &b);
        eprintln!("{w} x {h}: input cosine {input_cos}, embedding cosine {embed_cos}");
        // The pixels differ a little (an 8x8 block mean then a short resize, against one long resize); what the
        // model makes of them does not.
        assert!(input_cos >= 0.995, "{w} x {h}: input cosine {input_cos}");
        assert!(
            embed_cos >= 0.999,
            "{w} x {h}: embedding cosine {embed_cos}"
        );
    }
}

/// A JPEG of `img` carrying EXIF orientation tag `tag` (APP1 inserted after SOI).
fn with_orientation(img: &RgbImage, tag: u16) -> Vec<u8> {
    let plain = jpeg(img);
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&tag.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    out
}

/// Mean colour of a region of an image.
fn mean(img: &DynamicImage, x0: u32, y0: u32, w: u32, h: u32) -> [f32; 3] {
    let rgb = img.to_rgb8();
    let mut sum = [0f32; 3];
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            for (c, s) in sum.iter_mut().enumerate() {
                *s += rgb.get_pixel(x, y).0[c] as f32;
            }
        }
    }
    sum.map(|s| s / (w * h) as f32)
}

#[test]
fn every_exif_orientation_comes_out_upright() {
    // Upright: 64 x 32, the top-left quadrant red, the rest blue.
    let upright = RgbImage::from_fn(64, 32, |x, y| {
        if x < 32 && y < 16 {
            image::Rgb([230, 20, 20])
        } else {
            image::Rgb([20, 20, 230])
        }
    });
    // What a camera stores for each tag: the upright image under the tag's inverse transform.
    let inverse = [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (5, 5),
        (6, 8),
        (7, 7),
        (8, 6),
    ];
    for (tag, inv) in inverse {
        let mut stored = DynamicImage::ImageRgb8(upright.clone());
        stored.apply_orientation(Orientation::from_exif(inv).unwrap());
        let bytes = with_orientation(&stored.to_rgb8(), tag);
        for (path, img, scale) in [
            (
                "scaled",
                decode_for(&bytes, ImageLimits::default(), 16).unwrap(),
                2,
            ),
            ("full", decode(&bytes, ImageLimits::default()).unwrap(), 1),
        ] {
            assert_eq!(
                (img.width() * scale, img.height() * scale),
                (64, 32),
                "tag {tag}, {path}"
            );
            let (w, h) = (img.width(), img.height());
            let red = mean(&img, w / 16, h / 16, w * 3 / 8, h * 3 / 8);
            let blue = mean(&img, w * 9 / 16, h * 9 / 16, w * 3 / 8, h * 3 / 8);
            assert!(
                red[0] > 180.0 && red[2] < 80.0,
                "tag {tag}, {path}: top-left {red:?}"
            );
            assert!(
                blue[2] > 180.0 && blue[0] < 80.0,
                "tag {tag}, {path}: bottom-right {blue:?}"
            );
        }
    }
}

#[test]
fn a_truncated_or_oversized_jpeg_is_an_error() {
    let p = Preprocessing::imagenet(224);
    let bytes = jpeg(&photo(1200, 900, 9));
    for cut in [bytes.len() / 2, bytes.len() - 100, 600] {
        let err = preprocess_bytes(&bytes[..cut], &p, ImageLimits::default()).unwrap_err();
        assert!(
            matches!(err, PreprocessError::Truncated | PreprocessError::Decode(_)),
            "cut at {cut}: {err:?}"
        );
    }
    let small = ImageLimits {
        max_width: 1000,
        max_height: 1000,
        ..ImageLimits::default()
    };
    assert!(matches!(
        preprocess_bytes(&bytes, &p, small),
        Err(PreprocessError::TooLarge(_))
    ));
}
