//! `hetvis-serve` start-up refusals, overload (429), request timeout and graceful shutdown on SIGTERM.

use std::path::Path;
use std::sync::OnceLock;

use hetvis_models::manifest::Role;
use hetvis_tests::bare_command;
use hetvis_tests::fixtures::{model, path_str, png, Gallery, DIM};
use hetvis_tests::http;
use hetvis_tests::server::Server;

fn gallery() -> &'static Gallery {
    static G: OnceLock<Gallery> = OnceLock::new();
    G.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("server_lifecycle");
        let _ = std::fs::remove_dir_all(&root);
        Gallery::build(&root)
    })
}

fn args_with(extra: &[&str]) -> Vec<String> {
    let mut args = gallery().args();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn refused(query: &Path, gallery_model: Option<&Path>) -> String {
    let g = gallery();
    let mut cmd = bare_command("hetvis-serve");
    cmd.args([
        "--index",
        path_str(&g.index),
        "--query-model",
        path_str(query),
    ]);
    if let Some(m) = gallery_model {
        cmd.args(["--gallery-model", path_str(m)]);
    }
    let out = cmd.args(["--addr", "127.0.0.1:0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "started with an unusable model:\n{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    stderr
}

#[test]
fn incompatible_models_are_refused_at_start_up() {
    let g = gallery();
    let dir = g.root.join("other-models");
    std::fs::create_dir_all(&dir).unwrap();
    // Another embedding space.
    let foreign = model(&dir, "foreign", Role::Query, "space-2", 3, DIM);
    let e = refused(&foreign, None);
    assert!(
        e.contains("space-2") && e.contains("space-1") && e.contains("cannot be used"),
        "{e}"
    );
    // The right space, the wrong dimension.
    let narrow = model(&dir, "narrow", Role::Query, "space-1", 4, 16);
    let e = refused(&narrow, None);
    assert!(e.contains("16-d") && e.contains("32-d"), "{e}");
    // A gallery model in the right space that did not build the index.
    let retrained = model(&dir, "retrained", Role::Gallery, "space-1", 5, DIM);
    let e = refused(&g.query_model, Some(&retrained));
    assert!(e.contains("not the one that built the index"), "{e}");
    // Missing files are named.
    let e = refused(&dir.join("missing.onnx"), None);
    assert!(e.contains("missing.onnx"), "{e}");
}

#[test]
fn a_full_queue_answers_429_with_retry_after_and_the_server_recovers() {
    // One worker, one forward pass per image, a queue of one, and slow passes: most of a burst must be refused.
    let args = args_with(&[
        "--workers",
        "1",
        "--max-batch",
        "1",
        "--queue-capacity",
        "1",
        "--embed-delay-ms",
        "1000",
    ]);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = server.addr;
    let image = png(11);
    let results: Vec<http::Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| s.spawn(|| http::post(addr, "/search", "image/png", &image)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy: Vec<&http::Response> = results.iter().filter(|r| r.status == 429).collect();
    assert!(
        !busy.is_empty(),
        "no 429 among {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(results.iter().all(|r| r.status == 200 || r.status == 429));
    assert!(results.iter().any(|r| r.status == 200));
    for r in busy {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.json()["error"].as_str().unwrap().contains("retry"));
    }
    assert_eq!(http::get(addr, "/healthz").status, 200);
    assert_eq!(http::post(addr, "/search", "image/png", &image).status, 200);
}

#[test]
fn a_request_past_the_timeout_gets_503() {
    let args = args_with(&["--request-timeout-ms", "200", "--embed-delay-ms", "1500"]);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let r = http::post(server.addr, "/search", "image/png", &png(12));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("timed out"));
    assert_eq!(http::get(server.addr, "/healthz").status, 200);
}

/// Polls `/metrics` until at least `n` requests are being served (the poll itself counts) or `done()`.
fn wait_in_flight(addr: std::net::SocketAddr, n: f64, done: impl Fn() -> bool) {
    loop {
        let m = http::get(addr, "/metrics").text();
        let gauge = m
            .lines()
            .find_map(|l| l.strip_prefix("hetvis_http_requests_in_flight "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if gauge >= n || done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn searches_beyond_max_in_flight_get_429_before_their_body_is_read() {
    let args = args_with(&["--max-in-flight", "1", "--embed-delay-ms", "1000"]);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = server.addr;
    let image = png(14);
    std::thread::scope(|s| {
        let slow = s.spawn(|| http::post(addr, "/search", "image/png", &image));
        wait_in_flight(addr, 2.0, || slow.is_finished());
        if !slow.is_finished() {
            let r = http::post(addr, "/search", "image/png", &image);
            assert_eq!(r.status, 429, "{}", r.text());
            assert_eq!(r.header("retry-after"), Some("1"));
            assert!(r.json()["error"].as_str().unwrap().contains("in flight"));
            assert_eq!(http::get(addr, "/healthz").status, 200);
        }
        assert_eq!(slow.join().unwrap().status, 200);
    });
    assert_eq!(http::post(addr, "/search", "image/png", &image).status, 200);
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_cleanly() {
    let args = args_with(&["--embed-delay-ms", "1000"]);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = server.addr;
    let image = png(13);
    std::thread::scope(|s| {
        let in_flight = s.spawn(|| http::post(addr, "/search", "image/png", &image));
        // Wait until the search is being served (the gauge counts the /metrics request too).
        wait_in_flight(addr, 2.0, || in_flight.is_finished());
        let status = server.terminate();
        assert!(status.success(), "exit status {status:?}");
        let r = in_flight.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    });
}
