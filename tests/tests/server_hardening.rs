//! Work and replies under timeouts, with faults injected into test builds (`HETVIS_FAILPOINTS`): a timed-out
//! search keeps its admission until its decode ends; an upload past the timeout is answered 202 with an
//! operation that commits; a server that takes uploads is the index's only writer.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hetvis_tests::bare_command;
use hetvis_tests::fixtures::{path_str, png, Gallery};
use hetvis_tests::http::{self, Part};
use hetvis_tests::server::Server;

fn gallery() -> &'static Gallery {
    static G: OnceLock<Gallery> = OnceLock::new();
    G.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("server_hardening");
        let _ = std::fs::remove_dir_all(&root);
        Gallery::build(&root)
    })
}

fn start(extra: &[&str], failpoints: &str) -> Server {
    let mut args = gallery().args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_env(&args, &[("HETVIS_FAILPOINTS", failpoints)])
}

#[test]
fn a_timed_out_search_holds_its_admission_until_its_decode_ends() {
    // Every decode takes 2 s; a request may take 300 ms; one request may be in flight.
    let server = start(
        &["--max-in-flight", "1", "--request-timeout-ms", "300"],
        "decode=sleep(2000)",
    );
    let image = png(21);
    let r = http::post(server.addr, "/search", "image/png", &image);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("timed out"));
    // The first request has been answered, but its decode runs on for over a second: it still counts.
    let r = http::post(server.addr, "/search", "image/png", &image);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("in flight"));
    assert_eq!(http::get(server.addr, "/healthz").status, 200);
    // Once the decode is over, requests are admitted again (and time out in their own decode).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http::post(server.addr, "/search", "image/png", &image);
        if r.status != 429 {
            assert_eq!(r.status, 503, "{}", r.text());
            break;
        }
        assert!(Instant::now() < deadline, "never admitted again");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bearer() -> String {
    "Bearer s3cret".to_owned()
}

fn operation(server: &Server, url: &str) -> serde_json::Value {
    let auth = bearer();
    let r = http::request(server.addr, "GET", url, &[("Authorization", &auth)], &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn an_upload_past_the_timeout_is_accepted_and_its_operation_commits() {
    let g = gallery();
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("idx");
    g.copy_index(&index);
    let mut args = g.args();
    args[1] = path_str(&index).to_owned();
    args.extend(["--admin-token", "s3cret", "--request-timeout-ms", "1000"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Every commit is slow: a log append takes 3 s to be fsynced.
    let server = Server::start_env(
        &args,
        &[("HETVIS_FAILPOINTS", "wal-before-sync=sleep(3000)")],
    );

    let (a, b) = (png(600), png(601));
    let part = |id: &'static str, bytes: &'static [u8]| {
        [
            Part::Text {
                name: "id",
                value: id,
            },
            Part::File {
                name: "image",
                filename: None,
                content_type: "image/png",
                bytes,
            },
        ]
    };
    let a: &'static [u8] = Box::leak(a.into_boxed_slice());
    let b: &'static [u8] = Box::leak(b.into_boxed_slice());
    let r = http::upload(server.addr, Some("s3cret"), &part("slow/a", a));
    assert_eq!(r.status, 202, "{}", r.text());
    let body = r.json();
    let url = body["status_url"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), Some(url.as_str()));
    assert_eq!(body["state"], "running");

    // While the server takes uploads, it is the index's only writer.
    let add = bare_command("hetvis-index")
        .args(["add", "--index", path_str(&index), "--model"])
        .arg(&g.gallery_model)
        .arg("--source")
        .arg(&g.images)
        .arg("--no-progress")
        .output()
        .unwrap();
    assert!(!add.status.success());
    let err = String::from_utf8_lossy(&add.stderr);
    assert!(err.contains("another writer"), "{err}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let op = operation(&server, &url);
        if op["state"] != "running" {
            break op;
        }
        assert!(Instant::now() < deadline, "the operation never finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["state"], "committed", "{done}");
    assert_eq!(done["result"]["ids"], serde_json::json!(["slow/a"]));
    assert_eq!(done["result"]["durable"], true);
    let info = http::get(server.addr, "/v1/info").json();
    assert_eq!(info["index"]["size"], 25);

    // The client's retry of the upload it was told 202 about is a success, not a conflict.
    let r = http::upload(server.addr, Some("s3cret"), &part("slow/a", a));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["already_present"], serde_json::json!(["slow/a"]));
    // Other bytes under the same id are a conflict.
    let r = http::upload(server.addr, Some("s3cret"), &part("slow/a", b));
    assert_eq!(r.status, 409, "{}", r.text());
    // And after a restart the addition is there.
    assert!(server.terminate().success());
    let server = Server::start(&args);
    assert_eq!(
        http::get(server.addr, "/v1/info").json()["index"]["size"],
        25
    );
}
