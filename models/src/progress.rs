//! The one progress-bar style of every long job (training, search, evaluation, indexing): a bar drawn from an
//! indicatif template, on stderr, only where stderr is a terminal. The trainer adds a relay for its child
//! processes on top of it.

use indicatif::{ProgressBar, ProgressStyle};

/// A style from an indicatif template (the default bar if the template does not parse).
pub fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A bar of `len` steps drawn with `template`; hidden when `enabled` is false (e.g. `--no-progress`).
pub fn bar(len: u64, template: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    ProgressBar::new(len).with_style(style(template))
}
