//! The router driven in-process around [`crate::test_state`]: readiness probes, locks and upload replies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt;

use super::router;
use crate::test_state::{self, multipart, png, Options, BOUNDARY, TOKEN};

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn upload(parts: &[(&str, &[u8])]) -> Request<Body> {
    Request::post("/gallery")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(multipart(parts)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_readiness_probes_costs_one_check() {
    let o = Options::default();
    let passes = o.passes.clone();
    let app = router(test_state::state(o));
    let probes: Vec<_> = (0..16)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, get("/readyz")).await })
        })
        .collect();
    for p in probes {
        let (status, body) = p.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ready");
    }
    // One check embeds the probe once per model (query and gallery); every other call reused its result.
    let n = passes.load(Ordering::SeqCst);
    assert!(n <= 2, "{n} probe images embedded for 16 probes");
}

#[test]
fn uploads_never_block_an_async_thread_on_the_index_lock() {
    let dir = tempfile::tempdir().unwrap();
    let state = test_state::state(Options {
        index_dir: Some(dir.path().join("idx")),
        ..Options::default()
    });
    // A writer holds the index lock for a while, as a large graph insert does.
    let released = Arc::new(AtomicBool::new(false));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = {
        let (state, released) = (state.clone(), released.clone());
        std::thread::spawn(move || {
            let guard = state.write_index();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            released.store(true, Ordering::SeqCst);
            drop(guard);
        })
    };
    held_rx.recv().unwrap();
    // One async thread: if the upload blocked it on the lock, nothing else could be answered.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = router(state.clone());
        let image = png(1);
        let up = {
            let app = app.clone();
            tokio::spawn(async move { send(&app, upload(&[("new/1", &image)])).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, _) = send(&app, get("/healthz")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !released.load(Ordering::SeqCst),
            "/healthz was only answered after the index lock was released"
        );
        let (status, body) = up.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    });
    holder.join().unwrap();
}

#[tokio::test]
async fn a_retried_upload_is_a_success_and_other_bytes_under_a_taken_id_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("idx");
    let state = test_state::state(Options {
        index_dir: Some(index_dir.clone()),
        ..Options::default()
    });
    let app = router(state.clone());
    let (a, b) = (png(1), png(2));
    let (status, body) = send(&app, upload(&[("new/a", &a)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["ids"], serde_json::json!(["new/a"]));
    assert_eq!(body["durable"], true);
    // The retry of a committed upload.
    let (status, body) = send(&app, upload(&[("new/a", &a)])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["added"], 0);
    assert_eq!(body["already_present"], serde_json::json!(["new/a"]));
    // The same id with other bytes.
    let (status, body) = send(&app, upload(&[("new/a", &b)])).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("another image"));
    // A retry that adds what the first attempt did not have.
    let (status, body) = send(&app, upload(&[("new/a", &a), ("new/b", &b)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["ids"], serde_json::json!(["new/b"]));
    assert_eq!(body["already_present"], serde_json::json!(["new/a"]));
    assert_eq!(body["index_size"], 52);
    // The content hashes are saved with the records, so a restart keeps recognising retries; the graph is
    // saved with them, so a restart loads it rather than rebuilding it.
    let reopened = hetvis_indexer::Index::open_without_graph(&index_dir).unwrap();
    assert_eq!(reopened.load_or_build_graph().unwrap().1, "loaded");
    let row = reopened.row_of("new/a").unwrap();
    assert_eq!(
        reopened.records()[row].sha256.as_deref(),
        Some(hetvis_indexer::checksum::sha256_hex(&a).as_str())
    );
}

#[tokio::test]
async fn operations_need_the_token_and_unknown_ones_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(test_state::state(Options {
        index_dir: Some(dir.path().join("idx")),
        ..Options::default()
    }));
    let (status, _) = send(&app, get("/operations/1-1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let req = Request::get("/operations/1-1")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_removed_item_leaves_search_at_once_and_on_disk_and_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("idx");
    let state = test_state::state(Options {
        index_dir: Some(index_dir.clone()),
        ..Options::default()
    });
    let app = router(state.clone());
    let image = png(5);
    let (status, body) = send(&app, upload(&[("shop/shoe 1", &image)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let delete = |path: &str, token: Option<&str>| {
        let mut r = Request::delete(path);
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    };
    let (status, _) = send(&app, delete("/gallery/shop%2Fshoe%201", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(state.read_index().contains_id("shop/shoe 1"));

    // A `/` in the id may be sent as is or encoded.
    let (status, body) = send(&app, delete("/gallery/shop/shoe%201", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["removed"], "shop/shoe 1");
    assert_eq!(body["index_size"], 50);
    assert_eq!(body["durable"], true);
    let search = Request::post("/search")
        .header(header::CONTENT_TYPE, "image/png")
        .body(Body::from(image.clone()))
        .unwrap();
    let (status, body) = send(&app, search).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"shop/shoe 1"), "{ids:?}");
    let (status, body) = send(&app, delete("/gallery/shop%2Fshoe%201", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, ready) = send(&app, get("/readyz")).await;
    assert_eq!(
        (ready["index_size"].as_u64(), ready["removed_rows"].as_u64()),
        (Some(50), Some(1))
    );

    // Saved: a restart does not bring it back, and the id can be uploaded again.
    let reopened = hetvis_indexer::Index::open_without_graph(&index_dir).unwrap();
    assert!(!reopened.contains_id("shop/shoe 1"));
    assert_eq!(reopened.live_len(), 50);
    let (status, body) = send(&app, upload(&[("shop/shoe 1", &image)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Waits for the background compaction to have finished `runs` times; its status then.
async fn compacted(
    state: &crate::state::SharedState,
    runs: u64,
) -> crate::compaction::CompactionStatus {
    for _ in 0..500 {
        let s = state.compaction_status();
        if s.runs >= runs || s.state == "failed" {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no compaction: {:?}", state.compaction_status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_logged_without_rewriting_and_compacted_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("idx");
    let state = test_state::state(Options {
        index_dir: Some(index_dir.clone()),
        compaction_policy: Some(hetvis_indexer::CompactionPolicy {
            min_log_items: 3,
            reclaim_ratio: 0.05,
            ..Default::default()
        }),
        ..Options::default()
    });
    let app = router(state.clone());
    let manifest = std::fs::read(index_dir.join("manifest.json")).unwrap();
    for i in 0..2u32 {
        let (status, body) = send(&app, upload(&[(&format!("new/{i}"), &png(10 + i))])).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Two log entries; the stored files are untouched.
    assert_eq!(
        std::fs::read(index_dir.join("manifest.json")).unwrap(),
        manifest
    );
    let (_, ready) = send(&app, get("/readyz")).await;
    assert_eq!(ready["log"]["changes"], 2, "{ready}");
    assert_eq!(ready["log"]["added"], 2, "{ready}");
    assert_eq!(ready["compaction"]["state"], "idle", "{ready}");
    assert!(ready["log"]["bytes"].as_u64().unwrap() > 0);

    // The third changed item crosses the threshold: a fold, in the background.
    let (status, _) = send(&app, upload(&[("new/2", &png(12))])).await;
    assert_eq!(status, StatusCode::CREATED);
    let status = compacted(&state, 1).await;
    assert_eq!((status.state, status.error), ("idle", None));
    assert_ne!(
        std::fs::read(index_dir.join("manifest.json")).unwrap(),
        manifest
    );
    let reopened = hetvis_indexer::Index::open_without_graph(&index_dir).unwrap();
    assert_eq!(
        (reopened.base_rows(), reopened.log_stats().changes),
        (53, 0)
    );
    assert_eq!(reopened.load_or_build_graph().unwrap().1, "loaded");

    // Removals past a twentieth of the rows (3 of 53): a reclaim drops their rows and builds the graph anew.
    let delete = |id: String| {
        Request::delete(format!("/gallery/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap()
    };
    for i in 0..3 {
        let (status, body) = send(&app, delete(format!("item%2F{i}"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let status = compacted(&state, 2).await;
    assert_eq!(status.error, None);
    let live = state.read_index().clone_without_graph();
    assert_eq!((live.len(), live.live_len()), (50, 50));
    assert!(!live.contains_id("item/0") && live.contains_id("new/2"));
    let reopened = hetvis_indexer::Index::open_without_graph(&index_dir).unwrap();
    assert_eq!((reopened.len(), reopened.live_len()), (50, 50));
    // Later changes are logged against the compacted files.
    let (status, body) = send(&app, upload(&[("after", &png(20))])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let reopened = hetvis_indexer::Index::open_without_graph(&index_dir).unwrap();
    assert!(reopened.contains_id("after"));
    let metrics = app.oneshot(get("/metrics")).await.unwrap();
    let text = axum::body::to_bytes(metrics.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    for line in [
        "hetvis_index_compactions_total{kind=\"fold\",outcome=\"ok\"} 1",
        "hetvis_index_compactions_total{kind=\"reclaim\",outcome=\"ok\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(text.contains("hetvis_index_log_bytes "), "{text}");
}
