//! `hetvis-model` end to end: a spec and weights on disk -> `export` -> `inspect` -> `embed` real image files.

use std::path::Path;

use hetvis_models::arch::{Backbone, MobileNetV2Spec, ModelSpec, Stem};
use hetvis_models::weights::Weights;
use hetvis_tests::{bare_command, run_ok};

fn write_png(path: &Path, shade: u8) {
    let img = image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([shade, (x * 6) as u8, (y * 8) as u8])
    });
    img.save(path).unwrap();
}

#[test]
fn export_inspect_and_embed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ModelSpec::new(
        Backbone::Mobilenetv2(MobileNetV2Spec::new(0.25, Stem::Small)),
        24,
        32,
    );
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let weights_path = dir.path().join("w.safetensors");
    Weights::random(&spec.lower().unwrap(), 7)
        .save(&weights_path)
        .unwrap();
    let model = dir.path().join("q.onnx");
    let p = |p: &Path| p.to_str().unwrap().to_owned();

    let out = run_ok(
        "hetvis-model",
        &[
            "export",
            "--spec",
            &p(&spec_path),
            "--weights",
            &p(&weights_path),
            "--out",
            &p(&model),
            "--role",
            "query",
            "--compat-id",
            "space-1",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("compat_id space-1"));
    assert!(model.is_file() && dir.path().join("q.json").is_file());

    let out = run_ok("hetvis-model", &["inspect", &p(&model)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"role\": \"query\"") && text.contains("[batch, 3, 24, 24]"),
        "{text}"
    );

    let (a, b, bad) = (
        dir.path().join("a.png"),
        dir.path().join("b.png"),
        dir.path().join("bad.png"),
    );
    write_png(&a, 10);
    write_png(&b, 200);
    std::fs::write(&bad, b"definitely not a png").unwrap();
    let out = run_ok(
        "hetvis-model",
        &["embed", "--model", &p(&model), &p(&a), &p(&b), &p(&bad)],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows[..2] {
        let e: Vec<f64> = serde_json::from_value(row["embedding"].clone()).unwrap();
        assert_eq!(e.len(), 32);
        assert!((e.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-4);
    }
    assert_ne!(rows[0]["embedding"], rows[1]["embedding"]);
    assert!(rows[2]["error"].as_str().unwrap().contains("not an image"));
}

#[test]
fn flops_json_and_clear_errors() {
    let out = run_ok(
        "hetvis-model",
        &[
            "flops",
            "--arch",
            "resnet101",
            "--input",
            "224",
            "--classes",
            "1000",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["arch"], "resnet101");
    assert!((v["mmacs"].as_f64().unwrap() - 7800.0).abs() < 78.0);
    let out = bare_command("hetvis-model")
        .args(["flops", "--arch", "resnet7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown architecture"));
    let out = bare_command("hetvis-model")
        .args(["inspect", "/nonexistent.onnx"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.onnx"));
}
