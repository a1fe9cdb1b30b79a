//! CMP-NAS end to end on the tiny preset through the real binary: super-network -> search -> retrain the winner
//! -> export -> evaluation with baselines (the jobs side by side in child processes), then a second search
//! reusing the super-network, then a sequential re-run that finds every stage finished.

use std::path::Path;

use hetvis_tests::run_ok;

fn train(args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok("hetvis-train", &[&["--device", "cpu"], args].concat()).stdout)
        .into_owned()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

#[test]
fn tiny_pipeline_searches_retrains_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    // Two workers: after the gallery, the jobs run side by side in child processes.
    let pipeline = |workers: &str| {
        train(&[
            "pipeline",
            "--preset",
            "tiny",
            "--out",
            &s(&out),
            "--workers",
            workers,
        ])
    };
    let text = pipeline("2");
    assert!(text.contains("| cmpnas-8x | bct |"), "{text}");
    // Interim reports after every model reuse earlier evaluations: the gallery and the five query models
    // (two baselines in two modes, the winner) are each evaluated once, not once per report.
    assert!(text.contains("(6 model evaluations in this run"), "{text}");

    let tier = out.join("tier-8x");
    let gallery_mmacs = json(&out.join("gallery/model.json"))["mmacs"]
        .as_f64()
        .unwrap();
    let budget = gallery_mmacs / 8.0;
    // The tiny preset's super-network trains children under the tier's budget, and says so.
    let sn_run = json(&tier.join("supernet/supernet.json"));
    assert_eq!(sn_run["preset"]["sampling"], "under_budget");
    let trained_under = sn_run["train_under_mmacs"].as_f64().unwrap();
    assert!((trained_under - budget).abs() < 1e-6 * budget, "{sn_run}");
    // The search: every candidate logged, under the budget, never twice.
    let log = std::fs::read_to_string(tier.join("search/search_log.jsonl")).unwrap();
    let cands: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = json(&tier.join("search/summary.json"));
    assert_eq!(cands.len() as u64, summary["evaluated"].as_u64().unwrap());
    assert!(cands.len() >= 6);
    let mut keys = std::collections::HashSet::new();
    for c in &cands {
        assert!(c["mmacs"].as_f64().unwrap() <= budget + 1e-9, "{c}");
        assert!(
            keys.insert((c["blocks"].to_string(), c["widths"].to_string())),
            "evaluated twice: {c}"
        );
    }
    // The winner is the best of the search's three best, re-scored on the whole validation split.
    let mut by_reward = cands.clone();
    by_reward.sort_by(|a, b| {
        let r = |c: &serde_json::Value| c["rewards"]["reward"].as_f64().unwrap();
        r(b).total_cmp(&r(a))
    });
    let arch = |c: &serde_json::Value| (c["blocks"].to_string(), c["widths"].to_string());
    let top3: Vec<_> = by_reward.iter().take(3).map(arch).collect();
    let finalists = summary["finalists"].as_array().unwrap();
    assert_eq!(finalists.len(), 3);
    for f in finalists {
        assert!(
            top3.contains(&arch(f)),
            "{f} is not among the search's best"
        );
    }
    assert_eq!(arch(&summary["best"]), arch(&finalists[0]));
    let rescored: Vec<f64> = finalists
        .iter()
        .map(|c| c["rewards"]["reward"].as_f64().unwrap())
        .collect();
    assert!(rescored.windows(2).all(|w| w[0] >= w[1]), "{rescored:?}");
    let best_text = std::fs::read_to_string(tier.join("search/best.json")).unwrap();
    let best = json(&tier.join("search/best.json"));
    assert_eq!(best["family"], "spos");
    assert_eq!(best["blocks"], summary["best"]["blocks"]);
    assert!(std::fs::read_to_string(tier.join("search/reward.svg"))
        .unwrap()
        .contains("<polyline"));

    // The retrained winner is that architecture, exported as a compatible query model under the budget.
    let winner = json(&tier.join("cmpnas-bct/model.json"));
    assert_eq!(winner["spec"]["backbone"]["blocks"], best["blocks"]);
    assert_eq!(
        winner["compat_id"],
        json(&out.join("gallery/model.json"))["compat_id"]
    );
    assert!(winner["mmacs"].as_f64().unwrap() <= budget + 1e-9);
    assert!(tier.join("cmpnas-bct/model.onnx").is_file());
    // Each child process logged to its job's directory.
    let job_log = std::fs::read_to_string(tier.join("cmpnas-bct/job.log")).unwrap();
    assert!(job_log.contains("search"), "{job_log}");

    // The report covers the winner and both baselines in both modes, with the plot.
    let report = json(&out.join("report/report.json"));
    let names: Vec<&str> = report["query_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    for n in [
        "cmpnas-8x",
        "mobilenetv2-8x-bct",
        "mobilenetv2-8x-independent",
        "shufflenetv2-8x-bct",
        "shufflenetv2-8x-independent",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(
        std::fs::read_to_string(out.join("report/accuracy_vs_mmacs.svg"))
            .unwrap()
            .contains("<circle")
    );

    // `score` rates a logged candidate exactly as the search did.
    let text = train(&[
        "score",
        "--supernet",
        &s(&tier.join("supernet")),
        "--arch",
        &s(&tier.join("search/best.json")),
    ]);
    let scored: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let logged = cands
        .iter()
        .find(|c| arch(c) == arch(&summary["best"]))
        .unwrap();
    // (Up to the last bits of a convolution on another thread count, which can swap a close pair of neighbours.)
    for k in ["homogeneous", "heterogeneous", "reward"] {
        let (a, b) = (
            scored["rewards"][k].as_f64().unwrap(),
            logged["rewards"][k].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 0.02, "{k}: {a} vs {b} logged");
    }

    // Another reward over the same super-network: only the search runs.
    let r2 = dir.path().join("search-r2");
    let text = train(&[
        "search",
        "--gallery",
        &s(&out.join("gallery")),
        "--tier",
        "8x",
        "--reward",
        "r2",
        "--supernet",
        &s(&tier.join("supernet")),
        "--out",
        &s(&r2),
    ]);
    assert!(text.contains("best of"), "{text}");
    assert_eq!(json(&r2.join("summary.json"))["reward"], "r2");
    assert_eq!(json(&r2.join("search.json"))["reward"], "r2");

    // A search directory resumes only its own search: asking it for another reward is refused, by name.
    let search_r2 = |extra: &[&str]| {
        let g = s(&out.join("gallery"));
        let sn = s(&tier.join("supernet"));
        let o = s(&r2);
        let mut args = vec![
            "--device",
            "cpu",
            "search",
            "--gallery",
            g.as_str(),
            "--tier",
            "8x",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--supernet", sn.as_str(), "--out", o.as_str()]);
        hetvis_tests::bare_command("hetvis-train")
            .args(&args)
            .output()
            .unwrap()
    };
    let refused = search_r2(&["--reward", "r3"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains("reward"), "{err}");
    assert_eq!(json(&r2.join("summary.json"))["reward"], "r2");

    // Another search seed over the same super-network: the super-network is reused as trained (its log is
    // untouched), and the search draws other candidates.
    let sn_log = std::fs::read_to_string(tier.join("supernet/train_log.jsonl")).unwrap();
    let seeded = dir.path().join("search-seed7");
    train(&[
        "search",
        "--gallery",
        &s(&out.join("gallery")),
        "--tier",
        "8x",
        "--search-seed",
        "7",
        "--supernet",
        &s(&tier.join("supernet")),
        "--out",
        &s(&seeded),
    ]);
    assert_eq!(json(&seeded.join("search.json"))["config"]["seed"], 7);
    assert_eq!(
        std::fs::read_to_string(tier.join("supernet/train_log.jsonl")).unwrap(),
        sn_log
    );
    let seeded_log = std::fs::read_to_string(seeded.join("search_log.jsonl")).unwrap();
    assert_ne!(
        seeded_log, log,
        "seed 7 searched the same candidates as seed 0"
    );

    // Re-running the pipeline, one job after the other in this process, finds every stage finished.
    let start = std::time::Instant::now();
    let text = pipeline("1");
    assert!(text.contains("(6 model evaluations in this run"), "{text}");
    let log_again = std::fs::read_to_string(tier.join("search/search_log.jsonl")).unwrap();
    assert_eq!(log_again, log, "a finished search was extended");
    // The finalists were reused, not re-scored on this process's other thread count.
    assert_eq!(
        std::fs::read_to_string(tier.join("search/best.json")).unwrap(),
        best_text
    );
    assert_eq!(
        json(&tier.join("search/summary.json"))["finalists"],
        summary["finalists"]
    );
    eprintln!("re-run took {:?}", start.elapsed());
}

/// The pipeline with another compatibility objective than BCT alone: the super-network, the winner and the
/// compatible baselines train with it (ranking distillation reading the gallery's cached embeddings and
/// neighbour lists), stay in the gallery's embedding space, and the report shows the objective, each model's
/// gap to the paragon and the hubness of its search.
#[test]
fn tiny_pipeline_trains_with_a_non_bct_objective() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let text = train(&[
        "pipeline",
        "--preset",
        "tiny",
        "--out",
        &s(&out),
        "--workers",
        "2",
        "--objective",
        "reg+rank",
        "--rank-k",
        "8",
    ]);
    assert!(text.contains("| cmpnas-8x | reg+rank |"), "{text}");
    assert!(text.contains("| mobilenetv2-8x-bct | reg+rank |"), "{text}");
    assert!(
        text.contains("| mobilenetv2-8x-independent | independent |"),
        "{text}"
    );
    assert!(text.contains("Gap to the paragon"), "{text}");

    // The gallery's training-set embeddings were computed once and cached beside it, with the neighbour lists.
    let gallery = out.join("gallery");
    let key = json(&gallery.join("train-embeddings.json"));
    assert_eq!(key["neighbours"], 8, "{key}");
    assert!(gallery.join("train-embeddings.safetensors").is_file());

    let tier = out.join("tier-8x");
    let sn_run = json(&tier.join("supernet/supernet.json"));
    assert_eq!(sn_run["compat"]["objective"], "reg+rank", "{sn_run}");
    let gallery_id = json(&gallery.join("model.json"))["compat_id"].clone();
    for model in ["cmpnas-bct", "mobilenetv2-bct"] {
        let m = json(&tier.join(model).join("model.json"));
        assert_eq!(m["compat_id"], gallery_id, "{model}");
        assert_eq!(m["provenance"]["mode"], "reg+rank", "{model}");
    }
    // Independent controls keep an embedding space of their own.
    assert_ne!(
        json(&tier.join("mobilenetv2-independent/model.json"))["compat_id"],
        gallery_id
    );

    let report = json(&out.join("report/report.json"));
    let paragon = &report["paragon"]["metrics"];
    assert!(
        paragon["hubness"]["max"].as_u64().unwrap() >= 1,
        "{paragon}"
    );
    for q in report["query_models"].as_array().unwrap() {
        let gap = &q["gap_to_paragon"];
        let want =
            paragon["top10"].as_f64().unwrap() - q["heterogeneous"]["top10"].as_f64().unwrap();
        assert!((gap["top10"].as_f64().unwrap() - want).abs() < 1e-12, "{q}");
        assert!(q["heterogeneous"]["hubness"]["skewness"].is_number(), "{q}");
    }
}
