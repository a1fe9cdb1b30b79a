//! The compatibility studies on the tiny preset through the real binary: pruning grid, random architectures
//! and the reward ablation, checked for the structure of their outputs (the tiny preset's numbers mean
//! nothing). One gallery run serves all three.

use std::path::Path;

use hetvis_tests::{bare_command, run_ok};

/// The tiny preset made smaller still: the studies train dozens of models, so the gallery is a ResNet-18 and
/// every stage does the least that still exercises it. Written beside the runs and passed to every command.
fn write_study_preset(dir: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer/presets.json"),
    )
    .unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut tiny = all["tiny"].clone();
    tiny["gallery"]["backbone"]["depth"] = 18.into();
    tiny["gallery"]["train"]["epochs"] = 2.into();
    tiny["train_limit"] = 384.into();
    tiny["study"]["train_limit"] = 128.into();
    let c = &mut tiny["cmpnas"];
    c["supernet"]["epochs"] = 2.into();
    c["supernet"]["transition_epochs"] = 0.into();
    c["search"]["generations"] = 1.into();
    c["search"]["population"] = 4.into();
    c["search"]["select"] = 2.into();
    c["search"]["crossover"] = 2.into();
    c["bn_batches"] = 1.into();
    let path = dir.join("presets.json");
    std::fs::write(&path, serde_json::json!({ "tiny": tiny }).to_string()).unwrap();
    s(&path)
}

fn trainer(presets: &str) -> impl Fn(&[&str]) -> String + '_ {
    move |args| {
        let all = [&["--device", "cpu", "--preset-file", presets], args].concat();
        String::from_utf8_lossy(&run_ok("hetvis-train", &all).stdout).into_owned()
    }
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

#[test]
fn tiny_studies_prune_sample_search_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let presets = write_study_preset(dir.path());
    let train = trainer(&presets);
    let g = dir.path().join("gallery");
    train(&["gallery", "--preset", "tiny", "--out", &s(&g)]);
    let gallery = json(&g.join("model.json"));
    let gallery_mmacs = gallery["mmacs"].as_f64().unwrap();

    // Weight level: two criteria x two amounts x four training methods.
    let p = dir.path().join("pruning");
    let text = train(&[
        "study",
        "pruning",
        "--gallery",
        &s(&g),
        "--amounts",
        "0.5,0.9",
        "--out",
        &s(&p),
    ]);
    assert!(text.contains("| Prune method |"), "{text}");
    let table = json(&p.join("pruning.json"));
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for crit in ["magnitude", "channel"] {
        let mmacs = |amount: f64| mmacs_of(rows, crit, amount);
        assert!(mmacs(0.9) < mmacs(0.5) && mmacs(0.5) < gallery_mmacs);
        let spec = json(&p.join(format!("{crit}-50/spec.json")));
        assert_eq!(spec["backbone"]["family"], "resnet");
        assert_eq!(
            spec["backbone"]["inner"].as_array().unwrap().len(),
            8,
            "ResNet-18 has 8 blocks"
        );
    }
    for r in rows {
        let modes: Vec<&str> = r["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["mode"].as_str().unwrap())
            .collect();
        assert_eq!(modes, ["independent", "finetune", "bct", "kd"]);
    }
    // Every cell shipped an ONNX model of the pruned architecture; only BCT claims the gallery's space.
    for mode in ["independent", "finetune", "bct", "kd"] {
        let m = json(&p.join(format!("magnitude-90/{mode}/model.json")));
        assert!(p.join(format!("magnitude-90/{mode}/model.onnx")).is_file());
        assert_eq!(m["provenance"]["mode"], mode);
        assert!((m["mmacs"].as_f64().unwrap() - mmacs_of(rows, "magnitude", 0.9)).abs() < 1e-9);
        assert_eq!(
            m["compat_id"] == gallery["compat_id"],
            mode == "bct",
            "{mode}"
        );
    }
    // From-scratch cells depend only on the architecture, which both criteria share: trained once.
    assert!(!p.join("channel-90/bct").exists());
    assert!(p.join("channel-90/finetune/model.onnx").is_file());
    let cell = |crit: &str, mode: usize| {
        rows.iter()
            .find(|r| r["criterion"] == crit && r["amount"].as_f64() == Some(0.9))
            .unwrap()["cells"][mode]
            .clone()
    };
    assert_eq!(cell("magnitude", 2), cell("channel", 2));

    // Fine-tuning a different architecture needs its weights: refused with a clear error, then accepted.
    let spec = s(&p.join("magnitude-50/spec.json"));
    let ft = dir.path().join("ft");
    let out = bare_command("hetvis-train")
        .args([
            "--device",
            "cpu",
            "--preset-file",
            &presets,
            "query",
            "--gallery",
            &s(&g),
            "--arch",
            &spec,
            "--mode",
            "finetune",
        ])
        .args(["--out", &s(&ft)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--init"));
    assert!(!ft.exists(), "a refused run leaves nothing behind");
    let text = train(&[
        "query",
        "--gallery",
        &s(&g),
        "--arch",
        &spec,
        "--mode",
        "finetune",
        "--init",
        &s(&p.join("magnitude-50/init.safetensors")),
        "--out",
        &s(&ft),
    ]);
    assert!(text.contains("trained query model"), "{text}");

    // Architecture level: three random architectures near the 8x budget, BCT and vanilla.
    let r = dir.path().join("random");
    let random_archs = random_archs_args(&g, "3", "8x", None, &r);
    let random_archs: Vec<&str> = random_archs.iter().map(String::as_str).collect();
    train(&random_archs);
    let report = json(&r.join("random_archs.json"));
    let archs = report["archs"].as_array().unwrap();
    assert_eq!(archs.len(), 3);
    let budget = gallery_mmacs / 8.0;
    for a in archs {
        let m = a["mmacs"].as_f64().unwrap();
        assert!((m / budget - 1.0).abs() <= 0.5 + 1e-9, "{m} vs {budget}");
        assert!(a["bct"]["heterogeneous"]["top1"].as_f64().is_some());
        assert!(a["vanilla"]["homogeneous"]["top1"].as_f64().is_some());
    }
    for plot in [
        "a_het_vs_mmacs.svg",
        "b_vanilla_hom_vs_het.svg",
        "c_bct_hom_vs_het.svg",
    ] {
        let svg = std::fs::read_to_string(r.join(plot)).unwrap();
        assert_eq!(svg.matches("<circle").count(), 3, "{plot}");
    }
    assert!(std::fs::read_to_string(r.join("random_archs.md"))
        .unwrap()
        .contains("Kendall tau"));

    // Reward ablation: BCT and vanilla super-networks x R1/R2/R3, best architecture of each retrained (4x:
    // the ResNet-18 gallery is too small for the SPOS space at 8x).
    let w = dir.path().join("rewards");
    train(&[
        "study",
        "rewards",
        "--gallery",
        &s(&g),
        "--tier",
        "4x",
        "--top",
        "1",
        "--out",
        &s(&w),
    ]);
    let rewards = json(&w.join("rewards.json"));
    let cells = rewards["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6);
    for c in cells {
        assert_eq!(c["archs"].as_array().unwrap().len(), 1);
        let search = w.join(format!(
            "search-{}-{}",
            c["loss"].as_str().unwrap(),
            c["reward"].as_str().unwrap()
        ));
        assert!(search.join("best.json").is_file());
    }
    assert!(json(&w.join("supernet-vanilla/supernet.json"))["loss"] == "vanilla");
    assert!(std::fs::read_to_string(w.join("rewards.md"))
        .unwrap()
        .contains("| vanilla | R3 |"));

    // Does a super-network rank architectures as their retraining does? Random architectures at 4x, scored by
    // the ablation's BCT super-network (same space and gallery) as well as retrained.
    let k = dir.path().join("random-ranked");
    let ranked_args = random_archs_args(&g, "3", "4x", Some(&w.join("supernet-bct")), &k);
    train(&ranked_args.iter().map(String::as_str).collect::<Vec<_>>());
    let ranked = json(&k.join("random_archs.json"));
    for a in ranked["archs"].as_array().unwrap() {
        let w = &a["supernet"];
        let (hom, het) = (
            w["homogeneous"].as_f64().unwrap(),
            w["heterogeneous"].as_f64().unwrap(),
        );
        assert!(
            (0.0..=1.0).contains(&hom) && (0.0..=1.0).contains(&het),
            "{w}"
        );
        assert!(
            (w["reward"].as_f64().unwrap() - (hom + het)).abs() < 1e-9,
            "R3 = hom. + het. (the tiny preset's weights are 1:1): {w}"
        );
    }
    // Each tau is in [-1, 1], or undefined (null) where one side ties throughout (the tiny preset's retrained
    // models often do).
    let ranking = &ranked["supernet_ranking"];
    assert!(ranking.is_object(), "{ranked}");
    let column = |f: &dyn Fn(&serde_json::Value) -> f64| -> Vec<f64> {
        ranked["archs"].as_array().unwrap().iter().map(f).collect()
    };
    let ties = |v: &[f64]| v.iter().all(|x| *x == v[0]);
    for (tau, score, side) in [
        ("reward_vs_heterogeneous", "reward", "heterogeneous"),
        ("homogeneous_vs_homogeneous", "homogeneous", "homogeneous"),
    ] {
        let scores = column(&|a| a["supernet"][score].as_f64().unwrap());
        let accuracies = column(&|a| a["bct"][side]["top1"].as_f64().unwrap());
        match ranking[tau].as_f64() {
            Some(t) => assert!((-1.0..=1.0).contains(&t), "{tau}: {ranking}"),
            None => assert!(
                ties(&scores) || ties(&accuracies),
                "{tau} undefined although neither side ties: {scores:?} {accuracies:?}"
            ),
        }
    }
    let md = std::fs::read_to_string(k.join("random_archs.md")).unwrap();
    assert!(
        md.contains("Super-network") && md.contains("R3 vs het."),
        "{md}"
    );
    // A super-network of another space, of another gallery or with epochs left is refused before anything
    // is trained: copies of its record and checkpoint state, each with one field changed.
    let record = json(&w.join("supernet-bct/supernet.json"));
    let state = json(&w.join("supernet-bct/checkpoint.json"));
    assert_ne!(record["space"]["multiplier"], 0.5);
    let mut other_space = record.clone();
    other_space["space"]["multiplier"] = 0.5.into();
    let foreign = dir.path().join("gallery-other");
    std::fs::create_dir_all(&foreign).unwrap();
    let mut manifest = json(&g.join("model.json"));
    manifest["compat_id"] = "gallery-another-training".into();
    std::fs::write(foreign.join("model.json"), manifest.to_string()).unwrap();
    let mut other_gallery = record.clone();
    other_gallery["gallery"] = s(&foreign).into();
    let mut unfinished = state.clone();
    unfinished["epochs_done"] = 1.into();
    for (name, record, state, why) in [
        ("space", &other_space, &state, "another space"),
        ("gallery", &other_gallery, &state, "another gallery"),
        ("unfinished", &record, &unfinished, "1 of 2 epochs"),
    ] {
        let sn = dir.path().join(format!("supernet-{name}"));
        std::fs::create_dir_all(&sn).unwrap();
        std::fs::write(sn.join("supernet.json"), record.to_string()).unwrap();
        std::fs::write(sn.join("checkpoint.json"), state.to_string()).unwrap();
        let other = dir.path().join(format!("random-{name}"));
        let out = bare_command("hetvis-train")
            .args(["--device", "cpu", "--preset-file", &presets])
            .args(random_archs_args(&g, "2", "4x", Some(&sn), &other))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{name}: {err}");
        assert!(!other.join("arch-00").exists(), "{name}");
    }

    // A re-run finds everything trained and only re-evaluates.
    let start = std::time::Instant::now();
    train(&random_archs);
    assert_eq!(json(&r.join("random_archs.json"))["archs"], report["archs"]);
    eprintln!("re-run took {:?}", start.elapsed());
}

/// Arguments of `study random-archs`: `n` architectures near `tier`, optionally scored by a super-network.
fn random_archs_args(
    gallery: &Path,
    n: &str,
    tier: &str,
    supernet: Option<&Path>,
    out: &Path,
) -> Vec<String> {
    let mut args = [
        "study",
        "random-archs",
        "--gallery",
        &s(gallery),
        "--n",
        n,
        "--tier",
        tier,
    ]
    .map(String::from)
    .to_vec();
    if let Some(sn) = supernet {
        args.extend(["--supernet".into(), s(sn)]);
    }
    args.extend(["--out".into(), s(out)]);
    args
}

fn mmacs_of(rows: &[serde_json::Value], crit: &str, amount: f64) -> f64 {
    rows.iter()
        .find(|r| r["criterion"] == crit && r["amount"].as_f64() == Some(amount))
        .unwrap()["mmacs"]
        .as_f64()
        .unwrap()
}
