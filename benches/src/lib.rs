//! Shared helpers for hetvis benchmarks.

pub mod disk;
pub mod gallery_model;
pub mod load;
pub mod process;
pub mod rss;
pub mod stats;
pub mod vectors;

/// Writes a benchmark's figures as pretty JSON, creating the folder.
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
