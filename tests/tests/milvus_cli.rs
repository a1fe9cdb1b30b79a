//! `hetvis-index` on a Milvus collection, against the real Milvus 2.3.5 that `make test` starts
//! (scripts/milvus.sh, address in HETVIS_TEST_MILVUS). Marked ignored because it needs that server.

use std::path::Path;

use hetvis_indexer::{MilvusStore, MilvusTarget};
use hetvis_milvus::ConnectOptions;
use hetvis_models::manifest::Role;
use hetvis_tests::fixtures::{self, path_str as s};
use hetvis_tests::{bare_command, run_ok};

const DIM: usize = 32;

fn milvus() -> String {
    std::env::var("HETVIS_TEST_MILVUS").expect(
        "HETVIS_TEST_MILVUS is not set: this test needs a Milvus server; `make test` starts one (scripts/milvus.sh)",
    )
}

fn target(collection: &str) -> MilvusTarget {
    MilvusTarget {
        connect: ConnectOptions::new(milvus()),
        collection: collection.into(),
    }
}

fn hetvis_index(args: &[&str]) -> std::process::Output {
    bare_command("hetvis-index").args(args).output().unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs a Milvus server: make test starts one"]
fn build_search_add_remove_on_a_milvus_collection() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery = fixtures::model(tmp.path(), "gallery", Role::Gallery, "space-1", 1, DIM);
    let query = fixtures::model(tmp.path(), "query", Role::Query, "space-1", 2, DIM);
    let other_space = fixtures::model(tmp.path(), "other", Role::Query, "space-2", 3, DIM);
    let retrained = fixtures::model(tmp.path(), "retrained", Role::Gallery, "space-1", 4, DIM);
    let folder = fixtures::image_folder(tmp.path(), "gallery", 0..24);
    std::fs::write(folder.join("c0/broken.png"), b"not a png").unwrap();
    let uri = milvus();
    let collection = "hetvis_cli_test";
    MilvusStore::drop_collection(&target(collection)).unwrap();
    let m = ["--milvus", uri.as_str(), "--collection", collection];

    let mut args = vec![
        "build",
        "--model",
        s(&gallery),
        "--source",
        s(&folder),
        "--labels-from-dirs",
        "--no-progress",
    ];
    args.extend(m);
    let out = run_ok("hetvis-index", &args);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 skipped"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A second build does not replace the collection.
    let again = hetvis_index(&args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let mut info = vec!["info", "--json"];
    info.extend(m);
    let v = json(&hetvis_index(&info));
    assert_eq!(v["items"], 24);
    assert_eq!(v["manifest"]["gallery"]["compat_id"], "space-1");
    assert_eq!(v["manifest"]["dim"], DIM);

    // The query model of the space finds each image's own row first; another space is refused.
    let search = |model: &Path, image: &Path| {
        let mut a = vec![
            "search",
            "--model",
            s(model),
            s(image),
            "--json",
            "--k",
            "3",
        ];
        a.extend(m);
        hetvis_index(&a)
    };
    for image in ["c0/00.png", "c2/05.png", "c1/10.png"] {
        let hits = json(&search(&gallery, &folder.join(image)));
        assert_eq!(hits[0]["id"], image, "{hits}");
        assert_eq!(hits[0]["label"], image[..2].to_string());
    }
    let hits = json(&search(&query, &folder.join("c2/05.png")));
    assert_eq!(hits.as_array().unwrap().len(), 3);
    let refused = search(&other_space, &folder.join("c2/05.png"));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("space-2"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Adding: new ids go in, ids already there are skipped, another gallery model file is refused.
    let more = fixtures::image_folder(tmp.path(), "more", 100..104);
    let add = |model: &Path, source: &Path| {
        let mut a = vec![
            "add",
            "--model",
            s(model),
            "--source",
            s(source),
            "--no-progress",
        ];
        a.extend(m);
        hetvis_index(&a)
    };
    let out = add(&gallery, &more);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&hetvis_index(&info))["items"], 28);
    let out = add(&gallery, &more);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 skipped"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(json(&hetvis_index(&info))["items"], 28);
    let out = add(&retrained, &more);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the one that built"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Removing: gone from searches at once; unknown ids are reported.
    let mut rm = vec!["remove", "--id", "c2/05.png", "--id", "never"];
    rm.extend(m);
    let out = run_ok("hetvis-index", &rm);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 1"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never"));
    assert_eq!(json(&hetvis_index(&info))["items"], 27);
    let hits = json(&search(&gallery, &folder.join("c2/05.png")));
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .all(|h| h["id"] != "c2/05.png"),
        "{hits}"
    );

    // verify reads the collection back and measures its index against an exact scan of what it read.
    let mut verify = vec!["verify", "--json", "--k", "5", "--ef", "16,64"];
    verify.extend(m);
    let v = json(&hetvis_index(&verify));
    assert_eq!(v["vectors"], 27, "{v}");
    assert_eq!(v["queries"], 27, "{v}");
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["recall"], 1.0, "{v}");
    }

    // The embedded index built from the same images agrees on the nearest item.
    let idx = tmp.path().join("idx");
    run_ok(
        "hetvis-index",
        &[
            "build",
            "--model",
            s(&gallery),
            "--source",
            s(&folder),
            "--out",
            s(&idx),
            "--no-progress",
        ],
    );
    for image in ["c0/00.png", "c1/13.png"] {
        let local = json(&hetvis_index(&[
            "search",
            s(&idx),
            "--model",
            s(&query),
            s(&folder.join(image)),
            "--json",
            "--k",
            "1",
        ]));
        let remote = json(&search(&query, &folder.join(image)));
        assert_eq!(local[0]["id"], remote[0]["id"], "{image}");
        let (a, b) = (
            local[0]["score"].as_f64().unwrap(),
            remote[0]["score"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "{image}: {a} vs {b}");
    }
    MilvusStore::drop_collection(&target(collection)).unwrap();
}

#[test]
#[ignore = "needs a Milvus server: make test starts one"]
fn a_directory_or_milvus_must_be_named_and_not_both() {
    let out = hetvis_index(&["info"]);
    assert!(!out.status.success());
    let uri = milvus();
    let out = hetvis_index(&["info", "/tmp/x", "--milvus", &uri, "--collection", "c"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not both"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hetvis_index(&["info", "--milvus", &uri]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--collection"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hetvis_index(&[
        "info",
        "--milvus",
        &uri,
        "--collection",
        "no_such_collection",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no collection"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
