//! Progress bars of the trainer. In a terminal they draw as usual. In a pipeline job that runs as a child
//! process (see [`crate::jobs`]), each redraw is written to stdout as one marked line instead, and the parent
//! shows the latest line of every running job in its own bars: two processes cannot share a terminal's lines.

use std::io::Write;

use indicatif::{ProgressBar, ProgressDrawTarget, TermLike};

/// Set (to any value) in a child process whose bars the parent relays.
pub const LINES_ENV: &str = "HETVIS_PROGRESS_LINES";
/// Starts a relayed progress line on a child's stdout.
const MARKER: &str = "\u{1}progress\t";

/// A bar of `len` steps drawn with `template` (indicatif's syntax), wherever bars go in this process.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let style = hetvis_models::progress::style(template);
    let bar = if std::env::var_os(LINES_ENV).is_some() {
        ProgressBar::with_draw_target(
            Some(len),
            ProgressDrawTarget::term_like_with_hz(Box::new(LineTerm::default()), 1),
        )
    } else {
        ProgressBar::new(len)
    };
    bar.with_style(style)
}

/// The progress text of a line a child wrote, or `None` for any other output.
pub fn relayed(line: &str) -> Option<&str> {
    line.strip_prefix(MARKER)
}

/// A terminal of one line that writes every finished redraw to stdout as a marked line.
#[derive(Debug, Default)]
struct LineTerm {
    pending: std::sync::Mutex<String>,
}

impl LineTerm {
    fn emit(&self, text: &str) -> std::io::Result<()> {
        let text = text.trim_end();
        if text.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let written = writeln!(out, "{MARKER}{text}").and_then(|()| out.flush());
        if let Err(e) = &written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                // The parent pipeline is gone (killed): stop rather than train on unwatched. Checkpoints are
                // written atomically, so a re-run resumes from the last finished epoch.
                std::process::exit(141);
            }
        }
        written
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, String> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TermLike for LineTerm {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let line = std::mem::take(&mut *self.pending()) + s;
        self.emit(&line)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.pending().push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.pending().clear();
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let line = std::mem::take(&mut *self.pending());
        self.emit(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_lines_are_relayed() {
        assert_eq!(
            relayed(&format!("{MARKER}gallery [==> ] 3/9")),
            Some("gallery [==> ] 3/9")
        );
        assert_eq!(relayed("wrote runs/x/model.onnx"), None);
    }
}
