//! Drawing architectures from the SPOS space: uniformly (the super-network's training children), or narrowed
//! under a FLOPs budget (the search's random candidates, and the super-network's under-budget children).

use hetvis_models::arch::spos::{BLOCK_CHOICES, LAYERS, WIDTH_CHOICES};
use hetvis_models::arch::{SposSpace, SposSpec};
use rand::Rng;

/// A uniformly sampled architecture: block and width of every layer drawn independently and uniformly.
pub fn sample(space: &SposSpace, rng: &mut impl Rng) -> SposSpec {
    SposSpec {
        space: space.clone(),
        blocks: (0..LAYERS)
            .map(|_| rng.random_range(0..BLOCK_CHOICES as u8))
            .collect(),
        widths: (0..LAYERS)
            .map(|_| rng.random_range(0..WIDTH_CHOICES as u8))
            .collect(),
    }
}

/// A random architecture under the budget: every block and width drawn uniformly, then, while over the
/// budget, one random layer at a time narrowed by a width step (the blocks stay as drawn). Uniform draws alone
/// rarely fit a budget near the narrow end of a space: at 23x in the x0.25 space 1 draw in about 4,000 did,
/// which left the first two generations with one candidate each. `None` when even the narrowest widths of
/// the drawn blocks are over the budget.
pub fn sample_under(
    space: &SposSpace,
    max_mmacs: f64,
    mmacs: &mut impl FnMut(&SposSpec) -> f64,
    rng: &mut impl Rng,
) -> Option<SposSpec> {
    let mut a = sample(space, rng);
    let narrowest = SposSpec {
        widths: vec![0; LAYERS],
        ..a.clone()
    };
    if mmacs(&narrowest) > max_mmacs {
        return None;
    }
    loop {
        if mmacs(&a) <= max_mmacs {
            return Some(a);
        }
        let wide: Vec<usize> = (0..LAYERS).filter(|&i| a.widths[i] > 0).collect();
        if wide.is_empty() {
            return None;
        }
        a.widths[wide[rng.random_range(0..wide.len())]] -= 1;
    }
}
