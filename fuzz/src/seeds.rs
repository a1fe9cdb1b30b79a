//! The seed corpus: small valid inputs of every kind the paths accept, written by `hetvis-fuzz seed` and
//! committed under `fuzz/corpus/`, so every run starts from the same inputs.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat};

pub const BOUNDARY: &str = "hetvis-fuzz-boundary";

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format)
        .expect("encoding a seed image");
    buf.into_inner()
}

fn gradient(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w.max(1)) as u8,
            (y * 255 / h.max(1)) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    })
}

/// (file name, bytes) of the image seeds: every format, colour types, odd shapes.
pub fn images() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let rgb = DynamicImage::ImageRgb8(gradient(24, 16));
    for (format, ext) in [
        (ImageFormat::Png, "png"),
        (ImageFormat::Jpeg, "jpg"),
        (ImageFormat::Bmp, "bmp"),
        (ImageFormat::Gif, "gif"),
        (ImageFormat::WebP, "webp"),
    ] {
        out.push((format!("rgb-24x16.{ext}"), encode(&rgb, format)));
    }
    let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(16, 16, |x, y| {
        image::Rgba([x as u8 * 16, y as u8 * 16, 90, (x * y) as u8])
    }));
    out.push(("rgba-16x16.png".into(), encode(&rgba, ImageFormat::Png)));
    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([((x + y) * 4) as u8])
    }));
    out.push(("gray-28x28.png".into(), encode(&gray, ImageFormat::Png)));
    let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(8, 8, |x, y| {
        image::Rgb([x as u16 * 8000, y as u16 * 8000, 123])
    }));
    out.push(("rgb16-8x8.png".into(), encode(&deep, ImageFormat::Png)));
    // Strips: the shapes that once made preprocessing allocate hundreds of megabytes.
    out.push((
        "strip-1x300.png".into(),
        encode(&DynamicImage::ImageRgb8(gradient(1, 300)), ImageFormat::Png),
    ));
    // At the largest side the fuzz limits allow: scaling the short side to 224 px first would take 308 MB.
    out.push((
        "strip-1x2048.png".into(),
        encode(
            &DynamicImage::ImageRgb8(gradient(1, 2048)),
            ImageFormat::Png,
        ),
    ));
    out.push((
        "strip-2048x1.png".into(),
        encode(
            &DynamicImage::ImageRgb8(gradient(2048, 1)),
            ImageFormat::Png,
        ),
    ));
    out.push((
        "strip-300x1.jpg".into(),
        encode(
            &DynamicImage::ImageRgb8(gradient(300, 1)),
            ImageFormat::Jpeg,
        ),
    ));
    out
}

fn part(body: &mut Vec<u8>, headers: &str, content: &[u8]) {
    body.extend_from_slice(format!("--{BOUNDARY}\r\n{headers}\r\n\r\n").as_bytes());
    body.extend_from_slice(content);
    body.extend_from_slice(b"\r\n");
}

/// (file name, body) of the multipart seeds, all with [`BOUNDARY`].
pub fn multipart() -> Vec<(String, Vec<u8>)> {
    let png = encode(&DynamicImage::ImageRgb8(gradient(8, 8)), ImageFormat::Png);
    let mut one = Vec::new();
    part(
        &mut one,
        "Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png",
        &png,
    );
    one.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());

    let mut upload = Vec::new();
    part(
        &mut upload,
        "Content-Disposition: form-data; name=\"id\"",
        b"shoes/a",
    );
    part(
        &mut upload,
        "Content-Disposition: form-data; name=\"label\"",
        b"shoe",
    );
    part(
        &mut upload,
        "Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png",
        &png,
    );
    part(
        &mut upload,
        "Content-Disposition: form-data; name=\"image\"; filename=\"b.png\"",
        &png,
    );
    upload.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());

    let mut odd = Vec::new();
    part(
        &mut odd,
        "Content-Disposition: form-data; name=\"other\"",
        b"x",
    );
    part(
        &mut odd,
        "Content-Disposition: form-data; name*=UTF-8''image; filename*=UTF-8''%C3%A9.png",
        b"not an image",
    );
    vec![
        ("one-image.bin".into(), one),
        ("upload-two-images.bin".into(), upload),
        ("odd-fields-unterminated.bin".into(), odd),
    ]
}
