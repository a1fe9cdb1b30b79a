//! hetvis-serve on a Milvus collection, against the real Milvus 2.3.5 that `make test` starts
//! (scripts/milvus.sh; HETVIS_TEST_MILVUS, HETVIS_TEST_MILVUS_DIR). Two server processes serve one collection and
//! agree; with Milvus stopped mid-run searches are 503 JSON answers, and they recover when it is back. Marked
//! ignored because it needs that server; one test in this file, since it stops and restarts it.

use std::path::Path;
use std::time::{Duration, Instant};

use hetvis_indexer::{MilvusStore, MilvusTarget};
use hetvis_milvus::ConnectOptions;
use hetvis_models::manifest::Role;
use hetvis_tests::fixtures::{self, path_str as s};
use hetvis_tests::http;
use hetvis_tests::run_ok;
use hetvis_tests::server::Server;

const DIM: usize = 32;

fn search(server: &Server, image: &[u8]) -> http::Response {
    http::request(
        server.addr,
        "POST",
        "/search?k=5",
        &[("Content-Type", "image/png")],
        image,
    )
    .expect("the server answers")
}

fn milvus_script(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(root.join("scripts/milvus.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/milvus.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs a Milvus server: make test starts one"]
fn servers_on_one_milvus_collection_agree_and_survive_a_milvus_restart() {
    let uri = std::env::var("HETVIS_TEST_MILVUS")
        .expect("HETVIS_TEST_MILVUS: run through `make test` (scripts/milvus.sh)");
    let milvus_dir = std::env::var("HETVIS_TEST_MILVUS_DIR")
        .expect("HETVIS_TEST_MILVUS_DIR: run through scripts/milvus.sh");
    let tmp = tempfile::tempdir().unwrap();
    let gallery = fixtures::model(tmp.path(), "gallery", Role::Gallery, "space-1", 1, DIM);
    let query = fixtures::model(tmp.path(), "query", Role::Query, "space-1", 2, DIM);
    let other = fixtures::model(tmp.path(), "other", Role::Query, "space-2", 3, DIM);
    let folder = fixtures::image_folder(tmp.path(), "gallery", 0..24);
    let collection = "hetvis_server_test";
    let target = MilvusTarget {
        connect: ConnectOptions::new(uri.clone()),
        collection: collection.into(),
    };
    MilvusStore::drop_collection(&target).unwrap();
    run_ok(
        "hetvis-index",
        &[
            "build",
            "--milvus",
            &uri,
            "--collection",
            collection,
            "--model",
            s(&gallery),
            "--source",
            s(&folder),
            "--labels-from-dirs",
            "--no-progress",
        ],
    );

    let args = [
        "--milvus",
        uri.as_str(),
        "--collection",
        collection,
        "--query-model",
        s(&query),
        "--gallery-model",
        s(&gallery),
        "--admin-token",
        "t0ken",
        "--milvus-timeout-ms",
        "1500",
    ];
    let (a, b) = (Server::start(&args), Server::start(&args));
    let image = std::fs::read(folder.join("c1/04.png")).unwrap();
    let (ra, rb) = (search(&a, &image), search(&b, &image));
    assert_eq!((ra.status, rb.status), (200, 200), "{}", ra.text());
    let ids = |r: &http::Response| -> Vec<String> {
        r.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&ra).len(), 5);
    assert_eq!(
        ids(&ra),
        ids(&rb),
        "two replicas of one collection answer alike"
    );
    let paragon = http::request(
        a.addr,
        "POST",
        "/search?k=1&mode=paragon",
        &[("Content-Type", "image/png")],
        &image,
    )
    .unwrap();
    assert_eq!(
        paragon.json()["results"][0]["id"],
        "c1/04.png",
        "{}",
        paragon.text()
    );
    assert_eq!(paragon.json()["results"][0]["label"], "c1");
    let ready = http::get(a.addr, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(
        (
            ready.json()["backend"].as_str(),
            ready.json()["index_size"].as_u64()
        ),
        (Some("milvus"), Some(24))
    );
    let metrics = http::get(a.addr, "/metrics").text();
    assert!(metrics.contains("stage=\"milvus\""), "{metrics}");
    // The gallery is changed with hetvis-index --milvus, not through a (stateless) server.
    let (ct, body) = http::multipart(&[http::Part::File {
        name: "image",
        filename: Some("x.png"),
        content_type: "image/png",
        bytes: &image,
    }]);
    let up = http::request(
        a.addr,
        "POST",
        "/gallery",
        &[("Content-Type", &ct), ("Authorization", "Bearer t0ken")],
        &body,
    )
    .unwrap();
    assert_eq!(up.status, 403, "{}", up.text());
    drop(b);

    // A query model of another space is refused at start-up.
    let mut wrong = args.to_vec();
    wrong[5] = s(&other);
    let out = hetvis_tests::bare_command("hetvis-serve")
        .args(&wrong)
        .args(["--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("space-2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Milvus stops: searches and readiness are 503 JSON answers within the Milvus time limit, not hangs.
    milvus_script(&["stop", &milvus_dir]);
    let started = Instant::now();
    let down = search(&a, &image);
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(
        down.json()["error"].as_str().unwrap().contains("Milvus"),
        "{}",
        down.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(http::get(a.addr, "/readyz").status, 503);
    assert_eq!(
        http::get(a.addr, "/healthz").status,
        200,
        "the server itself is alive"
    );

    // Milvus comes back (same data): the same server answers again, with the same results.
    milvus_script(&["start", &milvus_dir]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let back = loop {
        let r = search(&a, &image);
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(ids(&back), ids(&ra));
    assert!(a.terminate().success());
    MilvusStore::drop_collection(&target).unwrap();
}
