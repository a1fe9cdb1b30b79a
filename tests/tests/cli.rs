//! The binaries start, find their native libraries without any exported variables, and read real data.

use hetvis_tests::run_ok;

#[test]
fn hetvis_model_finds_onnx_runtime_without_exports() {
    let out = run_ok("hetvis-model", &["runtime"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("libonnxruntime.so"), "{text}");
}

#[test]
fn hetvis_model_reads_fashion_mnist() {
    let out = run_ok("hetvis-model", &["data"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Train: 60000 images of 28x28, 10 classes"),
        "{text}"
    );
    assert!(
        text.contains("Test: 10000 images of 28x28, 10 classes"),
        "{text}"
    );
}

#[test]
fn hetvis_train_finds_libtorch_without_exports() {
    // The binary links libtorch dynamically: it only gets as far as printing help if the rpath works.
    let out = run_ok("hetvis-train", &["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("smoke"));
}

#[test]
fn serving_binaries_start() {
    for name in ["hetvis-index", "hetvis-serve"] {
        let out = run_ok(name, &["--version"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains(name));
    }
}
