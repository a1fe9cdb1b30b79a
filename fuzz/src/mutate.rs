//! Deterministic mutations (stable Rust, no instrumentation): the same seed gives the same cases, so any
//! finding is reproduced by re-running with its seed and case number.

/// SplitMix64: small, fast and good enough to drive mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that tend to find edge cases when written into length and dimension fields.
const INTERESTING_U32: [u32; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

/// Applies 1 to 4 random mutations to `input`, sometimes splicing in part of `other`.
pub fn mutate(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            out.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(9) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = [0, 0xff, 0x7f, 0x80, 1][rng.below(5)],
            2 => out[at] = rng.next() as u8,
            3 => {
                // A big-endian u32 (PNG, JPEG lengths are big-endian) or little-endian (BMP, WebP, GIF).
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                let bytes = if rng.below(2) == 0 {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                let width = [2, 4][rng.below(2)];
                for (i, b) in bytes[4 - width..].iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            4 => out.truncate(at),
            5 => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                out.drain(at..end);
            }
            6 => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let chunk = out[at..end].to_vec();
                let to = rng.below(out.len());
                out.splice(to..to, chunk);
            }
            7 => {
                let n = 1 + rng.below(32);
                let fill = rng.next() as u8;
                out.splice(at..at, std::iter::repeat_n(fill, n));
            }
            _ => {
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let end = (from + 1 + rng.below(256)).min(other.len());
                    out.truncate(at);
                    out.extend_from_slice(&other[from..end]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutations() {
        let input = b"\x89PNG\r\n\x1a\n0123456789abcdef".to_vec();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| mutate(&input, b"other", &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().any(|m| m != &input));
    }
}
