//! `hetvis-index` end to end: real binaries, real (tiny, random-weight) ONNX models, real image files.

use std::path::{Path, PathBuf};
use std::process::Output;

use hetvis_indexer::Index;
use hetvis_models::manifest::Role;
use hetvis_tests::{bare_command, fixtures, run_ok};

const DIM: usize = 32;

/// A MobileNetV2 x0.25 (small stem, 24 px, 32-d) with random weights, exported with its manifest.
fn model(dir: &Path, name: &str, role: Role, compat_id: &str, seed: u64) -> PathBuf {
    fixtures::model(dir, name, role, compat_id, seed, DIM)
}

/// A 30x20 PNG whose content depends on `seed`, so every image embeds differently.
fn write_png(path: &Path, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, fixtures::png(seed)).unwrap();
}

/// Three labelled folders of eight images, plus one corrupt PNG and one text file.
fn gallery_folder(root: &Path) -> PathBuf {
    let dir = root.join("gallery");
    for i in 0..24u32 {
        write_png(&dir.join(format!("c{}/{i:02}.png", i % 3)), i);
    }
    let mut png = std::fs::read(dir.join("c0/00.png")).unwrap();
    png.truncate(png.len() / 2);
    std::fs::write(dir.join("c0/corrupt.png"), png).unwrap();
    std::fs::write(dir.join("README.txt"), "photos of things").unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err(args: &[&str]) -> String {
    run_err_env(args, &[])
}

fn run_err_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = bare_command("hetvis-index")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "hetvis-index {args:?} should fail:\n{}",
        stdout(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn errors_report(idx: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(idx.join("errors.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn info(idx: &Path) -> serde_json::Value {
    serde_json::from_slice(&run_ok("hetvis-index", &["info", s(idx), "--json"]).stdout).unwrap()
}

fn search(idx: &Path, model: &Path, image: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["search", s(idx), "--model", s(model), s(image), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_slice(&run_ok("hetvis-index", &args).stdout).unwrap()
}

fn build(model: &Path, source: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "build",
        "--model",
        s(model),
        "--source",
        source,
        "--out",
        s(out),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    stdout(&run_ok("hetvis-index", &args))
}

#[test]
fn build_from_a_folder_skips_bad_files_then_add_reload_and_search() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery_model = model(tmp.path(), "gallery", Role::Gallery, "space-1", 1);
    let folder = gallery_folder(tmp.path());
    let idx = tmp.path().join("idx");

    let text = build(
        &gallery_model,
        s(&folder),
        &idx,
        &["--labels-from-dirs", "--batch", "5"],
    );
    assert!(
        text.contains("24 items searchable") && text.contains("2 skipped"),
        "{text}"
    );
    let errors = errors_report(&idx);
    let ids: Vec<&str> = errors.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["README.txt", "c0/corrupt.png"]);
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("not an image"));
    assert!(errors[1]["source"]
        .as_str()
        .unwrap()
        .ends_with("c0/corrupt.png"));

    let v = info(&idx);
    assert_eq!(v["manifest"]["count"], 24);
    assert_eq!(v["manifest"]["dim"], DIM);
    assert_eq!(v["manifest"]["gallery"]["compat_id"], "space-1");
    assert_eq!(v["labels"], serde_json::json!({"c0": 8, "c1": 8, "c2": 8}));

    // An indexed image finds itself first; results are sorted; HNSW and exact agree.
    let probe = folder.join("c1/04.png");
    let hits = search(&idx, &gallery_model, &probe, &["--k", "5"]);
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0]["id"], "c1/04.png");
    assert_eq!(hits[0]["label"], "c1");
    assert!((hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(
        search(&idx, &gallery_model, &probe, &["--k", "5", "--exact"]),
        hits
    );
    // An explicit ef takes the HNSW path even on a small index.
    assert_eq!(
        search(&idx, &gallery_model, &probe, &["--k", "5", "--ef", "32"]),
        hits
    );
    // The graph is read only for a search that uses it, never for --exact; `build` stored it, so it is loaded,
    // not rebuilt.
    let logged = |extra: &[&str]| {
        let mut args = vec!["search", s(&idx), "--model", s(&gallery_model), s(&probe)];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&run_ok("hetvis-index", &args).stderr).into_owned()
    };
    assert!(!logged(&["--exact"]).contains("the HNSW graph"));
    assert!(logged(&["--ef", "32"]).contains("loaded the HNSW graph"));
    let files = &info(&idx)["manifest"]["files"];
    assert!(files["graph.hnsw.graph"]["sha256"].is_string(), "{files}");

    // Add from a JSONL manifest: two new images, one missing file, one id already indexed.
    let more = tmp.path().join("more");
    write_png(&more.join("n1.png"), 100);
    write_png(&more.join("n2.png"), 101);
    std::fs::write(
        more.join("more.jsonl"),
        concat!(
            r#"{"id":"new/1","path":"n1.png","label":"c3","meta":{"sku":"A-1"}}"#,
            "\n",
            r#"{"id":"new/2","path":"n2.png"}"#,
            "\n",
            r#"{"id":"new/missing","path":"missing.png"}"#,
            "\n",
            r#"{"id":"c1/04.png","path":"n1.png"}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = run_ok(
        "hetvis-index",
        &[
            "add",
            "--index",
            s(&idx),
            "--model",
            s(&gallery_model),
            "--source",
            s(&more.join("more.jsonl")),
            "--no-progress",
        ],
    );
    assert!(
        stdout(&out).contains("26 items searchable"),
        "{}",
        stdout(&out)
    );
    let errors = errors_report(&idx);
    let mut ids: Vec<&str> = errors.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["c1/04.png", "new/missing"]);
    // A retried add of items that are all in already is nothing to do, not a failure.
    std::fs::write(
        more.join("again.jsonl"),
        concat!(
            r#"{"id":"new/1","path":"n1.png"}"#,
            "\n",
            r#"{"id":"new/2","path":"n2.png"}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = run_ok(
        "hetvis-index",
        &[
            "add",
            "--index",
            s(&idx),
            "--model",
            s(&gallery_model),
            "--source",
            s(&more.join("again.jsonl")),
            "--no-progress",
        ],
    );
    assert!(
        stdout(&out).contains("26 items searchable (+0, 2 skipped"),
        "{}",
        stdout(&out)
    );

    // Reload through the library: the added item is found with its metadata, HNSW agrees with exact.
    let index = Index::open(&idx).unwrap();
    assert_eq!(index.len(), 26);
    let row = index.row_of("new/1").unwrap();
    let q = index.vector(row).to_vec();
    let hnsw = index.search_hnsw(&q, 10, None).unwrap();
    let exact = index.search_exact(&q, 10).unwrap();
    assert_eq!(hnsw, exact);
    assert_eq!(hnsw[0].id, "new/1");
    assert_eq!(hnsw[0].meta, Some(serde_json::json!({"sku": "A-1"})));
    let hits = search(&idx, &gallery_model, &more.join("n1.png"), &["--k", "1"]);
    assert_eq!(hits[0]["id"], "new/1");

    let out = run_ok(
        "hetvis-index",
        &[
            "verify",
            s(&idx),
            "--queries",
            "26",
            "--ef",
            "10,64",
            "--min-recall",
            "0.99",
        ],
    );
    assert!(
        stdout(&out).contains("recall@10 = 1.0000 at ef=64"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn build_from_a_jsonl_manifest_and_refuse_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery_model = model(tmp.path(), "gallery", Role::Gallery, "space-1", 1);
    let images = tmp.path().join("img");
    let mut lines = String::new();
    for i in 0..12u32 {
        write_png(&images.join(format!("{i}.png")), i);
        lines.push_str(&format!(
            "{{\"id\":\"sku-{i}\",\"path\":\"img/{i}.png\",\"label\":\"l{}\",\"meta\":{{\"price\":{i}}}}}\n",
            i % 2
        ));
    }
    let manifest = tmp.path().join("gallery.jsonl");
    std::fs::write(&manifest, lines).unwrap();
    let idx = tmp.path().join("idx");
    let text = build(
        &gallery_model,
        s(&manifest),
        &idx,
        &["--m", "8", "--ef-construction", "50"],
    );
    assert!(
        text.contains("12 items searchable") && text.contains("nothing skipped"),
        "{text}"
    );
    assert!(errors_report(&idx).is_empty());
    let v = info(&idx);
    assert_eq!(v["manifest"]["hnsw"]["m"], 8);
    assert_eq!(v["manifest"]["hnsw"]["ef_construction"], 50);
    let hits = search(&idx, &gallery_model, &images.join("7.png"), &["--k", "3"]);
    assert_eq!(hits[0]["id"], "sku-7");
    assert_eq!(hits[0]["label"], "l1");
    assert_eq!(hits[0]["meta"], serde_json::json!({"price": 7}));

    let err = run_err(&[
        "build",
        "--model",
        s(&gallery_model),
        "--source",
        s(&manifest),
        "--out",
        s(&idx),
    ]);
    assert!(
        err.contains("already holds an index") && err.contains("--overwrite"),
        "{err}"
    );
    build(
        &gallery_model,
        s(&manifest),
        &idx,
        &["--overwrite", "--limit", "5"],
    );
    assert_eq!(info(&idx)["manifest"]["count"], 5);

    // Parameters hnsw_rs would exit(1) on are refused with a message.
    let err = run_err(&[
        "build",
        "--model",
        s(&gallery_model),
        "--source",
        s(&manifest),
        "--out",
        s(&tmp.path().join("idx2")),
        "--m",
        "300",
    ]);
    assert!(err.contains("M must be in 2..=256"), "{err}");
}

#[test]
fn nothing_embedded_is_a_failure_and_writes_no_index() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery_model = model(tmp.path(), "gallery", Role::Gallery, "space-1", 1);
    let junk = tmp.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("a.png"), b"not really").unwrap();
    std::fs::write(junk.join("b.txt"), b"text").unwrap();
    let idx = tmp.path().join("idx");
    let err = run_err(&[
        "build",
        "--model",
        s(&gallery_model),
        "--source",
        s(&junk),
        "--out",
        s(&idx),
        "--no-progress",
    ]);
    assert!(
        err.contains("nothing could be embedded") && err.contains("2 items skipped"),
        "{err}"
    );
    assert!(!idx.exists());
}

#[test]
fn a_crash_during_a_compaction_leaves_the_old_index_loadable() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery_model = model(tmp.path(), "gallery", Role::Gallery, "space-1", 1);
    let folder = gallery_folder(tmp.path());
    let idx = tmp.path().join("idx");
    build(&gallery_model, s(&folder), &idx, &[]);
    let more = tmp.path().join("more");
    for i in 0..4 {
        write_png(&more.join(format!("{i}.png")), 200 + i);
    }
    let add = |source: &Path| {
        run_ok(
            "hetvis-index",
            &[
                "add",
                "--index",
                s(&idx),
                "--model",
                s(&gallery_model),
                "--source",
                s(source),
                "--no-progress",
            ],
        )
    };
    // Logged: the stored files are not rewritten.
    add(&more);
    assert_eq!(info(&idx)["log"]["added"], 4);
    let compact = ["compact", "--index", s(&idx)];
    let leftovers = || {
        let mut n: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("idx."))
            .collect();
        n.sort();
        n
    };
    // Killed after writing the new version but before touching the old one, and between the two renames: the
    // old files and their log are what is read.
    for stage in ["after-temp-written", "after-old-moved"] {
        let err = run_err_env(
            &compact,
            &[("HETVIS_FAILPOINTS", &format!("{stage}=abort"))],
        );
        assert!(err.contains(stage), "{err}");
        let now = info(&idx);
        assert_eq!(
            (&now["items"], &now["log"]["added"]),
            (&serde_json::json!(28), &serde_json::json!(4)),
            "after a crash at {stage}"
        );
        let hits = search(
            &idx,
            &gallery_model,
            &folder.join("c2/05.png"),
            &["--k", "1"],
        );
        assert_eq!(hits[0]["id"], "c2/05.png");
    }
    // Readers read the previous version where the crash left it and rename nothing.
    assert!(!idx.exists());
    assert!(leftovers().iter().any(|n| n.starts_with("idx.old-")));
    // Killed after the new version is in place: the log is folded in; the old copy is left over.
    let err = run_err_env(
        &compact,
        &[("HETVIS_FAILPOINTS", "after-new-in-place=abort")],
    );
    assert!(err.contains("after-new-in-place"), "{err}");
    let now = info(&idx);
    assert_eq!(
        (&now["items"], &now["stored_rows"]),
        (&serde_json::json!(28), &serde_json::json!(28))
    );
    assert_eq!(now["log"]["changes"], 0);
    // The next writer cleans up every leftover of the killed ones.
    let third = tmp.path().join("third");
    for i in 0..2 {
        write_png(&third.join(format!("third-{i}.png")), 100 + i);
    }
    add(&third);
    assert_eq!(info(&idx)["items"], 30);
    assert_eq!(leftovers(), vec!["idx.lock"]);
}

#[test]
fn a_truncated_vectors_file_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery_model = model(tmp.path(), "gallery", Role::Gallery, "space-1", 1);
    let folder = gallery_folder(tmp.path());
    let idx = tmp.path().join("idx");
    build(&gallery_model, s(&folder), &idx, &[]);
    let vectors = idx.join("vectors.f32");
    let bytes = std::fs::read(&vectors).unwrap();
    std::fs::write(&vectors, &bytes[..bytes.len() - 100]).unwrap();
    for args in [
        vec!["info", s(&idx)],
        vec!["verify", s(&idx)],
        vec![
            "search",
            s(&idx),
            "--model",
            s(&gallery_model),
            s(&folder.join("c0/00.png")),
        ],
    ] {
        let err = run_err(&args);
        assert!(
            err.contains(s(&vectors)) && err.contains("truncated"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn models_from_another_embedding_space_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery_model = model(tmp.path(), "gallery", Role::Gallery, "space-1", 1);
    let folder = gallery_folder(tmp.path());
    let idx = tmp.path().join("idx");
    build(&gallery_model, s(&folder), &idx, &[]);
    let probe = folder.join("c0/03.png");

    let foreign = model(tmp.path(), "foreign", Role::Query, "space-2", 2);
    let err = run_err(&["search", s(&idx), "--model", s(&foreign), s(&probe)]);
    assert!(err.contains("space-2") && err.contains("space-1"), "{err}");

    // A query model trained into the index's space is accepted.
    let compatible = model(tmp.path(), "query", Role::Query, "space-1", 3);
    assert_eq!(search(&idx, &compatible, &probe, &["--k", "4"]).len(), 4);

    // Only the gallery model that built the index may add to it.
    let add = |m: &Path| {
        run_err(&[
            "add",
            "--index",
            s(&idx),
            "--model",
            s(m),
            "--source",
            s(&folder),
            "--no-progress",
        ])
    };
    assert!(add(&compatible).contains("needs the gallery model"));
    let retrained = model(tmp.path(), "gallery2", Role::Gallery, "space-1", 4);
    assert!(add(&retrained).contains("not the one that built the index"));
    assert_eq!(info(&idx)["manifest"]["count"], 24);
}

#[test]
fn precomputed_vectors_build_and_extend_an_index_without_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery_model = model(tmp.path(), "gallery", Role::Gallery, "space-1", 1);
    // 40 unit-ish vectors of the model's dimension; row 5 is NaN and row 9 is zero.
    let rows = 40;
    let mut data: Vec<f32> = (0..rows * DIM)
        .map(|i| ((i * 7919) % 101) as f32 / 101.0 - 0.5)
        .collect();
    data[5 * DIM] = f32::NAN;
    data[9 * DIM..10 * DIM].fill(0.0);
    let npy = tmp.path().join("shop.npy");
    hetvis_indexer::npy::write(&npy, &data, rows, DIM).unwrap();
    let ids = tmp.path().join("shop.jsonl");
    let lines: Vec<String> = (0..rows)
        .map(|i| format!("{{\"id\": \"sku-{i}\", \"label\": \"c{}\"}}", i % 4))
        .collect();
    std::fs::write(&ids, lines.join("\n")).unwrap();
    let idx = tmp.path().join("idx");

    let source = format!("npy:{}", s(&npy));
    let text = build(&gallery_model, &source, &idx, &["--ids", s(&ids)]);
    assert!(
        text.contains("38 items searchable") && text.contains("2 skipped"),
        "{text}"
    );
    let errors = errors_report(&idx);
    let skipped: Vec<&str> = errors.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(skipped, ["sku-5", "sku-9"]);
    assert!(errors[0]["error"].as_str().unwrap().contains("NaN"));

    // The stored vectors are the file's rows, normalised, under their ids and labels, in the model's space.
    let index = Index::open(&idx).unwrap();
    assert_eq!(index.manifest().gallery.compat_id, "space-1");
    let row = index.row_of("sku-7").unwrap();
    let v = &data[7 * DIM..8 * DIM];
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    for (stored, x) in index.vector(row).iter().zip(v) {
        assert!((stored - x / norm).abs() < 1e-6);
    }
    assert_eq!(index.records()[row].label.as_deref(), Some("c3"));
    let hits = index.search(v, 1, None).unwrap();
    assert_eq!(hits[0].id, "sku-7");

    // Added again without a records file: ids come from the file name, so none is taken.
    run_ok(
        "hetvis-index",
        &[
            "add",
            "--index",
            s(&idx),
            "--model",
            s(&gallery_model),
            "--source",
            &source,
            "--no-progress",
        ],
    );
    assert_eq!(info(&idx)["manifest"]["count"], 76);
    assert!(Index::open(&idx).unwrap().contains_id("shop/39"));

    // Another dimension, or --ids without an npy: source, is refused with the reason.
    let wrong = tmp.path().join("wrong.npy");
    hetvis_indexer::npy::write(&wrong, &[0.5; 3 * 8], 3, 8).unwrap();
    let err = run_err(&[
        "build",
        "--model",
        s(&gallery_model),
        "--source",
        &format!("npy:{}", s(&wrong)),
        "--out",
        s(&tmp.path().join("idx2")),
        "--no-progress",
    ]);
    assert!(
        err.contains("8-d") && err.contains(&format!("{DIM} dimensions")),
        "{err}"
    );
    let err = run_err(&[
        "build",
        "--model",
        s(&gallery_model),
        "--source",
        s(tmp.path()),
        "--ids",
        s(&ids),
        "--out",
        s(&tmp.path().join("idx3")),
        "--no-progress",
    ]);
    assert!(err.contains("--ids"), "{err}");
}

#[test]
fn removed_items_leave_every_search_at_once_and_compaction_reclaims_their_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery_model = model(tmp.path(), "gallery", Role::Gallery, "space-1", 1);
    let rows = 60;
    let data: Vec<f32> = (0..rows * DIM)
        .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
        .collect();
    let npy = tmp.path().join("items.npy");
    hetvis_indexer::npy::write(&npy, &data, rows, DIM).unwrap();
    let idx = tmp.path().join("idx");
    build(&gallery_model, &format!("npy:{}", s(&npy)), &idx, &[]);

    let out = run_ok(
        "hetvis-index",
        &[
            "remove",
            "--index",
            s(&idx),
            "--id",
            "items/3",
            "--id",
            "items/7",
            "--id",
            "nope",
        ],
    );
    assert!(stdout(&out).contains("removed 2"), "{}", stdout(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let v = info(&idx);
    assert_eq!(
        (v["items"].as_u64(), v["removed"].as_u64()),
        (Some(58), Some(2))
    );
    // A retried removal is a success that changes nothing.
    let again = run_ok(
        "hetvis-index",
        &["remove", "--index", s(&idx), "--id", "items/3"],
    );
    assert!(stdout(&again).contains("removed 0"), "{}", stdout(&again));

    let index = Index::open(&idx).unwrap();
    let q = &data[3 * DIM..4 * DIM];
    for hits in [
        index.search_exact(q, 60).unwrap(),
        index.search_hnsw(q, 10, Some(64)).unwrap(),
    ] {
        assert!(
            hits.iter().all(|h| h.id != "items/3" && h.id != "items/7"),
            "{hits:?}"
        );
    }
    assert_eq!(index.search_exact(q, 100).unwrap().len(), 58);

    let out = run_ok("hetvis-index", &["compact", "--index", s(&idx)]);
    assert!(
        stdout(&out).contains("2 removed rows reclaimed"),
        "{}",
        stdout(&out)
    );
    let v = info(&idx);
    assert_eq!(
        (v["manifest"]["count"].as_u64(), v["removed"].as_u64()),
        (Some(58), Some(0))
    );
    run_ok("hetvis-index", &["verify", s(&idx), "--min-recall", "0.9"]);
}
