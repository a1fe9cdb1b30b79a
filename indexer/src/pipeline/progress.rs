//! The indexing progress bar: images done, images/s and ETA on stderr (drawn only when stderr is a terminal).

use indicatif::ProgressBar;

pub fn bar(total: usize, enabled: bool) -> ProgressBar {
    hetvis_models::progress::bar(
        total as u64,
        "[{elapsed_precise}] {wide_bar} {pos}/{len} images  {per_sec}  ETA {eta}",
        enabled,
    )
}
