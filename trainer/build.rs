//! Embeds an rpath to the real `site-packages/torch/lib` so the trainer's binaries and tests find libtorch
//! without LD_LIBRARY_PATH. `$LIBTORCH` (set by .cargo/config.toml) is a directory of symlinks into the wheel;
//! the wheel's own libraries carry `$ORIGIN`-relative rpaths to the CUDA runtime wheels, so the rpath must name
//! the real directory, not the symlink one.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        return;
    };
    let probe = libtorch.join("lib").join("libtorch_cpu.so");
    println!("cargo:rerun-if-changed={}", probe.display());
    match std::fs::canonicalize(&probe) {
        Ok(real) => {
            let dir = real.parent().expect("a file has a parent directory");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            // Also the symlink dir, for a plain libtorch download where both are the same.
            println!(
                "cargo:rustc-link-arg=-Wl,-rpath,{}",
                libtorch.join("lib").display()
            );
        }
        Err(e) => println!(
            "cargo:warning=cannot resolve {} ({e}); run `make setup`",
            probe.display()
        ),
    }
}
