//! The search page (`GET /`) in headless Chromium: upload an image through the file input, wait for the
//! results to render, check them against the server's own `/search` answer, and take a screenshot.
//!
//! Needs Debian's `chromium` (installed by `make setup`); without it this test fails, it does not skip.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use hetvis_tests::fixtures::Gallery;
use hetvis_tests::http;
use hetvis_tests::server::Server;
use serde_json::Value;

fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = match std::env::var_os("HETVIS_CHROMIUM").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => ["chromium", "chromium-browser"]
            .iter()
            .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
            .find(|candidate| candidate.is_file()),
    };
    if let Some(p) = found.filter(|p| p.is_file()) {
        return p;
    }
    panic!(
        "headless Chromium is required for the page test and was not found on PATH: run `make setup` \
         (it installs Debian's chromium), or set HETVIS_CHROMIUM to a Chromium binary"
    );
}

/// Evaluates a JS expression in the page and returns its JSON value.
fn eval(tab: &Tab, js: &str) -> Value {
    tab.evaluate(js, false)
        .unwrap_or_else(|e| panic!("evaluating {js}: {e}"))
        .value
        .unwrap_or(Value::Null)
}

/// Polls `js` until it is true; fails with `what` after a generous deadline.
fn wait_for(tab: &Tab, js: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while eval(tab, js) != Value::Bool(true) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_page_uploads_an_image_and_shows_the_servers_results_with_thumbnails() {
    let chromium = chromium();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("server_page");
    let _ = std::fs::remove_dir_all(&root);
    let g = Gallery::build(&root);
    let args = g.args();
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let query = g.images.join("c2/05.png");
    let expected = http::post(
        server.addr,
        "/search?k=10",
        "image/png",
        &std::fs::read(&query).unwrap(),
    );
    assert_eq!(expected.status, 200, "{}", expected.text());
    let expected = expected.json();
    let expected_ids: Vec<&str> = expected["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();

    let browser = Browser::new(LaunchOptions {
        path: Some(chromium),
        headless: true,
        // Root in a container: Chromium's sandbox needs user namespaces it may not have.
        sandbox: false,
        window_size: Some((1000, 900)),
        idle_browser_timeout: Duration::from_secs(120),
        args: vec![OsStr::new("--disable-dev-shm-usage")],
        ..Default::default()
    })
    .expect("launching headless Chromium");
    let tab = browser.new_tab().expect("a browser tab");
    tab.set_default_timeout(Duration::from_secs(60));
    tab.navigate_to(&format!("http://{}/", server.addr))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_for(
        &tab,
        "document.getElementById('about').textContent.includes('gallery images')",
        "the server info line",
    );
    assert_eq!(
        eval(&tab, "document.querySelectorAll('#mode option').length"),
        2,
        "the paragon option appears when the gallery model is loaded"
    );

    tab.find_element("#file")
        .unwrap()
        .set_input_files(&[query.to_str().unwrap()])
        .unwrap();
    wait_for(
        &tab,
        "document.querySelectorAll('tr.result').length > 0",
        "result rows",
    );
    let shown = eval(
        &tab,
        "JSON.stringify([...document.querySelectorAll('tr.result')].map(r => r.dataset.id))",
    );
    let shown: Vec<String> = serde_json::from_str(shown.as_str().unwrap()).unwrap();
    assert_eq!(shown, expected_ids, "the page shows the server's ranking");
    let first_score: f64 = eval(
        &tab,
        "document.querySelector('tr.result td.score').firstChild.textContent",
    )
    .as_str()
    .unwrap()
    .parse()
    .unwrap();
    let want = expected["results"][0]["score"].as_f64().unwrap();
    assert!((first_score - want).abs() < 1e-3, "{first_score} vs {want}");
    let timings = eval(&tab, "document.getElementById('timings').textContent");
    assert!(timings.as_str().unwrap().contains("total"), "{timings}");
    // Thumbnails come from GET /gallery/{id}/image (the index was built from --gallery-root).
    wait_for(
        &tab,
        "[...document.querySelectorAll('td.thumb img')].some(i => i.complete && i.naturalWidth > 0)",
        "a loaded thumbnail",
    );

    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let shot = root.join("page.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let img = image::load_from_memory(&png).expect("decodable screenshot");
    assert!(
        img.width() >= 500 && img.height() >= 300,
        "{}x{}",
        img.width(),
        img.height()
    );
    eprintln!("screenshot: {}", shot.display());
}
