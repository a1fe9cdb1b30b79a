//! The tiny preset end to end through the real binaries: gallery -> BCT query -> independent query -> eval,
//! then re-runs that skip finished work and resume an interrupted one.

use std::path::Path;

use hetvis_tests::run_ok;

fn train(args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok("hetvis-train", &[&["--device", "cpu"], args].concat()).stdout)
        .into_owned()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

#[test]
fn tiny_pipeline_trains_exports_evaluates_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (g, bct, ind, rep) = (
        dir.path().join("gallery"),
        dir.path().join("q-bct"),
        dir.path().join("q-ind"),
        dir.path().join("report"),
    );
    let out = train(&["gallery", "--preset", "tiny", "--out", &s(&g)]);
    assert!(out.contains("trained gallery model"), "{out}");
    for f in [
        "model.onnx",
        "model.json",
        "weights.safetensors",
        "head.safetensors",
        "checkpoint.safetensors",
        "train_log.jsonl",
        "run.json",
    ] {
        assert!(g.join(f).is_file(), "gallery run lacks {f}");
    }
    let log = std::fs::read_to_string(g.join("train_log.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!epochs.is_empty());
    for e in &epochs {
        assert!(
            e["loss"].as_f64().unwrap().is_finite() && e["images_per_s"].as_f64().unwrap() > 0.0,
            "{e}"
        );
    }

    train(&[
        "query",
        "--gallery",
        &s(&g),
        "--arch",
        "mobilenetv2",
        "--mode",
        "bct",
        "--out",
        &s(&bct),
    ]);
    train(&[
        "query",
        "--gallery",
        &s(&g),
        "--arch",
        "mobilenetv2",
        "--mode",
        "independent",
        "--out",
        &s(&ind),
    ]);

    let manifest = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("model.json")).unwrap()).unwrap()
    };
    let (gm, bm, im) = (manifest(&g), manifest(&bct), manifest(&ind));
    assert_eq!(gm["role"], "gallery");
    assert_eq!(bm["role"], "query");
    assert_eq!(
        bm["compat_id"], gm["compat_id"],
        "a BCT model lives in the gallery's embedding space"
    );
    assert_ne!(
        im["compat_id"], gm["compat_id"],
        "an independent model does not"
    );
    assert_eq!(bm["provenance"]["mode"], "bct");
    assert_eq!(bm["provenance"]["preset"], "tiny");
    // Plain BCT records no objective (runs recorded before objectives existed are the same runs) and needs
    // no gallery embeddings.
    let run = std::fs::read_to_string(bct.join("run.json")).unwrap();
    assert!(!run.contains("compat"), "{run}");
    assert!(!g.join("train-embeddings.json").exists());

    // Another objective from the command line: supervised cross-model contrastive alone, without the query
    // model's own classifier. It reads the gallery's cached training-set embeddings and stays in its space.
    let supcon = dir.path().join("q-supcon");
    train(&[
        "query",
        "--gallery",
        &s(&g),
        "--arch",
        "mobilenetv2",
        "--objective",
        "supcon",
        "--cls-weight",
        "0",
        "--out",
        &s(&supcon),
    ]);
    let sm = manifest(&supcon);
    assert_eq!(sm["compat_id"], gm["compat_id"]);
    assert_eq!(sm["provenance"]["mode"], "supcon");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(supcon.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["compat"]["objective"], "supcon");
    assert_eq!(run["compat"]["cls_weight"], 0.0);
    assert!(g.join("train-embeddings.json").is_file());
    let refused = hetvis_tests::bare_command("hetvis-train")
        .args([
            "--device",
            "cpu",
            "query",
            "--gallery",
            &s(&g),
            "--arch",
            "mobilenetv2",
        ])
        .args([
            "--objective",
            "bct+nope",
            "--out",
            &s(&dir.path().join("q-nope")),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown objective term \"nope\""),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let out = train(&[
        "eval",
        "--gallery",
        &s(&g),
        "--query",
        &s(&bct),
        &s(&ind),
        "--out",
        &s(&rep),
    ]);
    assert!(out.contains("(paragon)"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["dataset"], "synthetic");
    assert!(report["protocol"]
        .as_str()
        .unwrap()
        .contains("leave-one-out"));
    assert_eq!(report["paragon"]["name"], "gallery");
    let metric_keys = [
        "top1",
        "top5",
        "top10",
        "map_at_r",
        "tar_at_far_1e-2",
        "tar_at_far_1e-3",
    ];
    for k in metric_keys {
        let v = report["paragon"]["metrics"][k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "paragon {k} = {v}");
    }
    let queries = report["query_models"].as_array().unwrap();
    assert_eq!(queries.len(), 2);
    for (q, mode) in queries.iter().zip(["bct", "independent"]) {
        assert_eq!(q["mode"], mode);
        assert!(q["mmacs"].as_f64().unwrap() < report["paragon"]["mmacs"].as_f64().unwrap());
        for side in ["homogeneous", "heterogeneous"] {
            for k in metric_keys {
                let v = q[side][k].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&v), "{mode} {side} {k} = {v}");
            }
        }
    }
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(
        md.contains("| gallery (paragon) |") && md.contains("| q-bct | bct |"),
        "{md}"
    );

    // Re-running a finished stage skips it.
    let out = train(&["gallery", "--preset", "tiny", "--out", &s(&g)]);
    assert!(out.contains("already trained"), "{out}");
    // An interrupted run (checkpoint written, model not yet exported) resumes instead of starting over.
    std::fs::remove_file(ind.join("model.onnx")).unwrap();
    std::fs::remove_file(ind.join("model.json")).unwrap();
    let out = train(&[
        "query",
        "--gallery",
        &s(&g),
        "--arch",
        "mobilenetv2",
        "--mode",
        "independent",
        "--out",
        &s(&ind),
    ]);
    assert!(out.contains("resumed after epoch"), "{out}");
    assert!(ind.join("model.onnx").is_file());
    // The same directory with a different job is refused, not silently mixed.
    let out = hetvis_tests::bare_command("hetvis-train")
        .args([
            "--device",
            "cpu",
            "query",
            "--gallery",
            &s(&g),
            "--arch",
            "shufflenetv2",
            "--mode",
            "bct",
            "--out",
            &s(&ind),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds a different run"), "{err}");
    // And says what differs: the architecture and the mode.
    assert!(
        err.contains("objective.mode: \"independent\" here, \"bct\" asked"),
        "{err}"
    );
    assert!(err.contains("spec.backbone.family"), "{err}");
}
