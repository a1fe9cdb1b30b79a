//! JPEG decoding at the size the model needs, through libjpeg-turbo's TurboJPEG API: the IDCT runs at 1/8, 2/8,
//! ... 8/8 of the full size (DCT-domain scaling), so a 12 MP phone photo for a 224 px model is decoded straight
//! to 500 x 375 pixels instead of 4000 x 3000. Only the Huffman decoding still touches every coefficient.
//!
//! Measured on this project's 2-core AMD EPYC for a 4000 x 3000 q90 JPEG of 4.6 MB (`benches/benches/decode.rs`
//! reproduces it): full decode with `image` (zune-jpeg) ~100 ms, pure-Rust `jpeg-decoder` at 1/8 ~82 ms,
//! libjpeg-turbo at 1/8 ~48 ms; hence libjpeg-turbo.
//!
//! Warnings are errors (`TJFLAG_STOPONWARNING`): libjpeg-turbo would otherwise pad a truncated file with grey
//! and report success, and a truncated upload must be refused like any other format's.

use std::ffi::CStr;
use std::os::raw::c_int;

use image::{DynamicImage, RgbImage};
use turbojpeg_sys as tj;

use crate::preprocess::{ImageLimits, PreprocessError};

/// Owns a TurboJPEG decompressor handle.
struct Handle(tj::tjhandle);

impl Handle {
    fn new() -> Result<Self, PreprocessError> {
        // SAFETY: no preconditions; a null handle is checked.
        let h = unsafe { tj::tjInitDecompress() };
        if h.is_null() {
            return Err(PreprocessError::Decode(
                "cannot start the JPEG decoder".into(),
            ));
        }
        Ok(Self(h))
    }

    fn error(&self) -> String {
        // SAFETY: the handle is live; the returned string is owned by it and copied at once.
        unsafe {
            let s = tj::tjGetErrorStr2(self.0);
            if s.is_null() {
                return "unknown JPEG error".into();
            }
            CStr::from_ptr(s).to_string_lossy().into_owned()
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by tjInitDecompress and destroyed once.
        unsafe {
            tj::tjDestroy(self.0);
        }
    }
}

fn decode_error(message: String) -> PreprocessError {
    let lower = message.to_lowercase();
    if lower.contains("premature end") || lower.contains("eof") || lower.contains("truncat") {
        PreprocessError::Truncated
    } else {
        PreprocessError::Decode(message)
    }
}

/// The smallest scaling factor libjpeg-turbo supports (at most 1) whose output's shorter side is still at least
/// `min_side`, and the scaled width and height.
fn choose_scale(width: u32, height: u32, min_side: u32) -> (u32, u32) {
    let mut n: c_int = 0;
    // SAFETY: writes the count to `n` and returns a static table of that many factors (or null).
    let table = unsafe { tj::tjGetScalingFactors(&mut n) };
    let factors: &[tj::tjscalingfactor] = if table.is_null() || n <= 0 {
        &[]
    } else {
        // SAFETY: the library owns a static array of `n` factors.
        unsafe { std::slice::from_raw_parts(table, n as usize) }
    };
    let scaled = |dim: u32, f: &tj::tjscalingfactor| {
        ((u64::from(dim) * f.num as u64).div_ceil(f.denom as u64)) as u32
    };
    factors
        .iter()
        .filter(|f| f.num > 0 && f.denom > 0 && f.num <= f.denom)
        .map(|f| (scaled(width, f), scaled(height, f)))
        .filter(|(w, h)| (*w).min(*h) >= min_side.min(width.min(height)))
        .min_by_key(|(w, h)| u64::from(*w) * u64::from(*h))
        .unwrap_or((width, height))
}

/// Decodes a JPEG to RGB at the smallest supported scale whose shorter side is at least `min_side` (the full size
/// when the image is smaller). The header is checked against `limits` before anything is allocated.
pub fn decode_scaled(
    bytes: &[u8],
    limits: ImageLimits,
    min_side: u32,
) -> Result<DynamicImage, PreprocessError> {
    let handle = Handle::new()?;
    let len = std::os::raw::c_ulong::try_from(bytes.len())
        .map_err(|_| PreprocessError::TooLarge(format!("{} bytes", bytes.len())))?;
    let (mut w, mut h, mut subsamp, mut colorspace): (c_int, c_int, c_int, c_int) = (0, 0, 0, 0);
    // SAFETY: reads `len` bytes of `bytes`; writes four ints.
    let ok = unsafe {
        tj::tjDecompressHeader3(
            handle.0,
            bytes.as_ptr(),
            len,
            &mut w,
            &mut h,
            &mut subsamp,
            &mut colorspace,
        )
    };
    if ok != 0 {
        return Err(decode_error(handle.error()));
    }
    let (w, h) = (w.max(0) as u32, h.max(0) as u32);
    if w == 0 || h == 0 {
        return Err(PreprocessError::Decode("image has no pixels".into()));
    }
    if w > limits.max_width || h > limits.max_height {
        return Err(PreprocessError::TooLarge(format!(
            "{w} x {h} pixels; the limit is {} x {}",
            limits.max_width, limits.max_height
        )));
    }
    let (sw, sh) = choose_scale(w, h, min_side);
    let buffer = 3 * u64::from(sw) * u64::from(sh);
    if buffer > limits.max_alloc {
        return Err(PreprocessError::TooLarge(format!(
            "decoding needs {buffer} bytes; the limit is {}",
            limits.max_alloc
        )));
    }
    let mut pixels = vec![0u8; buffer as usize];
    // SAFETY: `pixels` holds sw x sh RGB pixels with pitch 3 x sw; libjpeg-turbo scales to at most that size
    // (the size was computed from one of its own factors, so it fits exactly).
    let ok = unsafe {
        tj::tjDecompress2(
            handle.0,
            bytes.as_ptr(),
            len,
            pixels.as_mut_ptr(),
            sw as c_int,
            (3 * sw) as c_int,
            sh as c_int,
            tj::TJPF_TJPF_RGB as c_int,
            tj::TJFLAG_STOPONWARNING as c_int,
        )
    };
    if ok != 0 {
        return Err(decode_error(handle.error()));
    }
    let rgb = RgbImage::from_raw(sw, sh, pixels)
        .ok_or_else(|| PreprocessError::Decode("decoded buffer size mismatch".into()))?;
    Ok(DynamicImage::ImageRgb8(rgb))
}

/// The EXIF orientation of a JPEG (APP1 `Exif` segment before the first scan), if it has one.
pub fn exif_orientation(bytes: &[u8]) -> Option<image::metadata::Orientation> {
    let mut at = 2; // after SOI
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return None;
        }
        let marker = bytes[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            return None; // start of scan or end of image: no more metadata
        }
        let len = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let body = bytes.get(at + 4..at + 2 + len)?;
        if marker == 0xE1 && body.starts_with(b"Exif\0\0") {
            return image::metadata::Orientation::from_exif_chunk(&body[6..]);
        }
        at += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_keeps_the_shorter_side_at_least_the_model_input() {
        // 4000 x 3000 for 224 px: 1/8 gives 500 x 375.
        assert_eq!(choose_scale(4000, 3000, 224), (500, 375));
        // 1200 x 900 for 224: 2/8 gives 300 x 225 (1/8 would be 113 short).
        assert_eq!(choose_scale(1200, 900, 224), (300, 225));
        // Already small: full size.
        assert_eq!(choose_scale(100, 80, 224), (100, 80));
        assert_eq!(choose_scale(224, 224, 224), (224, 224));
    }
}
