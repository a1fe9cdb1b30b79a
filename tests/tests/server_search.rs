//! `hetvis-serve` end to end: searches by multipart and raw body against exact search, info, readiness,
//! metrics, the gallery image endpoint and the page, on a real process with tiny random-weight models.

use std::path::Path;
use std::sync::OnceLock;

use hetvis_tests::fixtures::{path_str, png, Gallery};
use hetvis_tests::http::{self, multipart, Part};
use hetvis_tests::prometheus_text;
use hetvis_tests::run_ok;
use hetvis_tests::server::Server;
use serde_json::Value;

fn gallery() -> &'static Gallery {
    static G: OnceLock<Gallery> = OnceLock::new();
    G.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("server_search");
        let _ = std::fs::remove_dir_all(&root);
        Gallery::build(&root)
    })
}

fn start() -> Server {
    let args = gallery().args();
    Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `hetvis-index search --exact --json`: the ground truth, computed by another binary.
fn exact(model: &Path, image: &Path, k: usize) -> Vec<Value> {
    let g = gallery();
    let out = run_ok(
        "hetvis-index",
        &[
            "search",
            path_str(&g.index),
            "--model",
            path_str(model),
            path_str(image),
            "--k",
            &k.to_string(),
            "--exact",
            "--json",
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(results: &[Value]) -> Vec<&str> {
    results.iter().map(|r| r["id"].as_str().unwrap()).collect()
}

fn assert_matches_exact(body: &Value, truth: &[Value]) {
    let results = body["results"].as_array().unwrap();
    assert_eq!(ids(results), ids(truth), "{body}");
    for (r, t) in results.iter().zip(truth) {
        let (a, b) = (r["score"].as_f64().unwrap(), t["score"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-5, "score {a} vs exact {b}");
        assert_eq!(r["label"], t["label"]);
    }
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not sorted: {scores:?}"
    );
}

#[test]
fn multipart_and_raw_searches_agree_with_exact_search_in_both_modes() {
    let g = gallery();
    let server = start();
    let query = g.root.join("query.png");
    std::fs::write(&query, png(1000)).unwrap();
    let bytes = std::fs::read(&query).unwrap();

    let (ct, body) = multipart(&[Part::File {
        name: "image",
        filename: Some("query.png"),
        content_type: "image/png",
        bytes: &bytes,
    }]);
    let r = http::post(server.addr, "/search?k=5", &ct, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let by_form = r.json();
    assert_matches_exact(&by_form, &exact(&g.query_model, &query, 5));
    assert_eq!(by_form["model"]["role"], "query");
    assert_eq!(by_form["model"]["compat_id"], "space-1");
    assert_eq!(by_form["model"]["provider"], "CPUExecutionProvider");
    assert!(by_form["model"]["mmacs"].as_f64().unwrap() > 0.0);
    for stage in ["decode", "embed", "search", "total"] {
        assert!(
            by_form["timings_ms"][stage].as_f64().unwrap() >= 0.0,
            "{stage}"
        );
    }

    // The raw body gives the same answer; k defaults to 10; ef is accepted.
    let r = http::post(server.addr, "/search?ef=32", "image/png", &bytes);
    assert_eq!(r.status, 200, "{}", r.text());
    let raw = r.json();
    assert_matches_exact(&raw, &exact(&g.query_model, &query, 10));
    assert_eq!(
        raw["results"].as_array().unwrap()[..5],
        by_form["results"].as_array().unwrap()[..]
    );

    // Paragon: the gallery model embeds the query; a gallery image finds itself with similarity 1.
    let own = g.images.join("c1/04.png");
    let r = http::post(
        server.addr,
        "/search?k=3&mode=paragon",
        "image/png",
        &std::fs::read(&own).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let paragon = r.json();
    assert_eq!(paragon["model"]["role"], "gallery");
    assert_matches_exact(&paragon, &exact(&g.gallery_model, &own, 3));
    assert_eq!(paragon["results"][0]["id"], "c1/04.png");
    assert!((paragon["results"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    assert_eq!(paragon["results"][0]["label"], "c1");

    // Its image is served from --gallery-root; unknown ids are 404 JSON.
    let r = http::get(server.addr, "/gallery/c1%2F04.png/image");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.body, std::fs::read(&own).unwrap());
    let r = http::get(server.addr, "/gallery/c1/04.png/image");
    assert_eq!(r.status, 200, "an unescaped slash in the id works too");
    for missing in [
        "/gallery/nope.png/image",
        "/gallery/c1%2F04.png",
        "/gallery/..%2F..%2Fetc%2Fpasswd/image",
    ] {
        let r = http::get(server.addr, missing);
        assert_eq!(r.status, 404, "{missing}");
        assert!(r.json()["error"].is_string());
    }
}

#[test]
fn hostile_inputs_get_json_client_errors_and_the_server_stays_up() {
    let g = gallery();
    let mut args = g.args();
    args.extend(
        [
            "--body-limit",
            "65536",
            "--max-image-side",
            "512",
            "--max-k",
            "20",
        ]
        .map(String::from),
    );
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = server.addr;
    let good = png(7);
    let expect = |r: http::Response, status: u16, needle: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{}",
            r.text()
        );
        let msg = r.json()["error"].as_str().unwrap().to_lowercase();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    };

    // Too large a body, raw and multipart.
    let big = vec![0u8; 100_000];
    expect(http::post(addr, "/search", "image/png", &big), 413, "");
    let (ct, body) = multipart(&[Part::File {
        name: "image",
        filename: Some("big.png"),
        content_type: "image/png",
        bytes: &big,
    }]);
    expect(http::post(addr, "/search", &ct, &body), 413, "");
    // Wrong or missing content type.
    expect(
        http::post(addr, "/search", "text/plain", &good),
        415,
        "content-type",
    );
    expect(
        http::post(addr, "/search", "application/json", b"{}"),
        415,
        "content-type",
    );
    let r = http::request(addr, "POST", "/search", &[], &good).unwrap();
    expect(r, 415, "content-type");
    // Garbage, truncated, empty.
    expect(
        http::post(addr, "/search", "image/png", b"this is not an image at all"),
        400,
        "not an image",
    );
    expect(
        http::post(addr, "/search", "image/png", &good[..good.len() / 2]),
        400,
        "",
    );
    expect(http::post(addr, "/search", "image/png", &[]), 400, "empty");
    // A photo's JPEG goes through the DCT-scaled decoder: cut short it is a 400, too large a 413, whole a 200.
    let jpeg = hetvis_models::data::synthetic::photo_jpeg(96, 64, 1, 90);
    assert_eq!(
        http::post(addr, "/search", "image/jpeg", &jpeg).status,
        200,
        "a whole JPEG is searched"
    );
    expect(
        http::post(addr, "/search", "image/jpeg", &jpeg[..jpeg.len() * 2 / 3]),
        400,
        "",
    );
    expect(
        http::post(
            addr,
            "/search",
            "image/jpeg",
            &hetvis_models::data::synthetic::photo_jpeg(600, 80, 1, 80),
        ),
        413,
        "limit",
    );
    // Dimensions over the limit: a real 600x600 image, and a header that claims 100000x100000.
    let wide = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::GrayImage::new(600, 600)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    };
    assert!(wide.len() < 65536);
    expect(
        http::post(addr, "/search", "image/png", &wide),
        413,
        "limit",
    );
    expect(
        http::post(
            addr,
            "/search",
            "image/png",
            &claim_size(&good, 100_000, 100_000),
        ),
        413,
        "limit",
    );
    // Bad k, ef, mode.
    for q in [
        "k=0",
        "k=21",
        "k=abc",
        "k=-1",
        "k=1.5",
        "ef=0",
        "ef=x",
        "mode=fast",
    ] {
        expect(
            http::post(addr, &format!("/search?{q}"), "image/png", &good),
            400,
            "",
        );
    }
    // Malformed multipart: no boundary, no image field, a body that ends mid-part.
    expect(
        http::post(addr, "/search", "multipart/form-data", &good),
        400,
        "boundary",
    );
    let (ct, body) = multipart(&[Part::Text {
        name: "other",
        value: "x",
    }]);
    expect(
        http::post(addr, "/search", &ct, &body),
        400,
        "no `image` field",
    );
    let (ct, body) = multipart(&[Part::File {
        name: "image",
        filename: None,
        content_type: "image/png",
        bytes: &good,
    }]);
    expect(
        http::post(addr, "/search", &ct, &body[..body.len() - 40]),
        400,
        "",
    );
    // Unknown route and wrong method are JSON too.
    expect(http::get(addr, "/nope"), 404, "no such endpoint");
    expect(http::get(addr, "/search"), 405, "");

    // Still alive and answering.
    assert_eq!(http::get(addr, "/healthz").status, 200);
    let r = http::post(addr, "/search?k=20", "image/png", &good);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 20);
    let metrics = http::get(addr, "/metrics").text();
    for status in ["400", "413", "415"] {
        let series = format!("hetvis_http_requests_total{{route=\"/search\",status=\"{status}\"}}");
        assert!(metrics.contains(&series), "{series} missing");
    }
}

/// A PNG whose header claims `w x h` (CRC fixed up), with the original small pixel data.
fn claim_size(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = png.to_vec();
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height; the CRC covers type + data (17 bytes).
    out[16..20].copy_from_slice(&w.to_be_bytes());
    out[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn info_readiness_metrics_and_page() {
    let server = start();
    let addr = server.addr;
    assert_eq!(http::get(addr, "/healthz").json()["status"], "ok");
    let ready = http::get(addr, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(ready.json()["index_size"], 24);

    let info = http::get(addr, "/v1/info").json();
    assert_eq!(info["models"]["query"]["compat_id"], "space-1");
    assert_eq!(info["models"]["gallery"]["role"], "gallery");
    assert!(info["models"]["gallery"]["mmacs"].as_f64().unwrap() > 0.0);
    assert_eq!(info["index"]["size"], 24);
    assert_eq!(info["index"]["dim"], 32);
    assert_eq!(info["index"]["hnsw"]["m"], 16);
    assert_eq!(info["provider"], "CPUExecutionProvider");

    // The OpenAPI description is served by the real server and names its operations.
    let api = http::get(addr, "/openapi.json");
    assert_eq!(api.status, 200, "{}", api.text());
    let api = api.json();
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    assert!(api["paths"]["/search"]["post"].is_object());
    assert!(api["components"]["securitySchemes"]["bearer"].is_object());

    for mode in ["query", "paragon"] {
        let r = http::post(addr, &format!("/search?mode={mode}"), "image/png", &png(3));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let text = http::get(addr, "/metrics");
    assert!(text
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let samples = prometheus_text::parse(&text.text()).unwrap();
    let find = |name: &str, labels: &[(&str, &str)]| prometheus_text::value(&samples, name, labels);
    for stage in ["decode", "embed", "search", "total"] {
        for mode in ["query", "paragon"] {
            let count = find(
                "hetvis_search_stage_seconds_count",
                &[("stage", stage), ("mode", mode)],
            );
            assert_eq!(count, Some(1.0), "{stage}/{mode}");
        }
        let first = find(
            "hetvis_search_stage_seconds_bucket",
            &[("stage", stage), ("le", "0.0001")],
        );
        assert!(first.is_some(), "the {stage} histogram starts at 0.1 ms");
    }
    assert!(find("hetvis_embed_batch_size_count", &[("model", "query")]).unwrap() >= 2.0);
    assert!(find(
        "hetvis_embed_batch_size_bucket",
        &[("model", "gallery"), ("le", "+Inf")]
    )
    .is_some());
    assert_eq!(find("hetvis_index_size", &[]), Some(24.0));
    assert!(find("hetvis_http_requests_in_flight", &[]).unwrap() >= 1.0);
    assert_eq!(
        find(
            "hetvis_http_requests_total",
            &[("route", "/readyz"), ("status", "200")]
        ),
        Some(1.0)
    );

    let page = http::get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("id=\"file\"") && !page.text().contains("http://"));
}

#[test]
fn concurrent_searches_batched_together_each_get_their_own_answer() {
    let mut args = gallery().args();
    args.extend(["--batch-wait-ms", "50", "--max-batch", "8"].map(String::from));
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = server.addr;
    let images: Vec<Vec<u8>> = (0..8).map(|i| png(2000 + i)).collect();
    let answer = |r: http::Response| {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    // One at a time (each a batch of one), then all at once (batched as they arrive).
    let alone: Vec<Value> = images
        .iter()
        .map(|b| answer(http::post(addr, "/search?k=5", "image/png", b)))
        .collect();
    let together: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .map(|b| s.spawn(move || answer(http::post(addr, "/search?k=5", "image/png", b))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut biggest = 0;
    for (a, t) in alone.iter().zip(&together) {
        assert_matches_exact(t, a["results"].as_array().unwrap());
        biggest = biggest.max(t["batch_images"].as_u64().unwrap());
    }
    eprintln!("largest shared forward pass: {biggest} images");
}

#[test]
fn a_fashion_mnist_index_serves_its_records_as_thumbnails() {
    let g = gallery();
    let fm = hetvis_models::data::FashionMnist::from_env();
    let index = g.root.join("fm-idx");
    let _ = std::fs::remove_dir_all(&index);
    run_ok(
        "hetvis-index",
        &[
            "build",
            "--model",
            path_str(&g.gallery_model),
            "--source",
            "fashion-mnist:train",
            "--limit",
            "30",
            "--out",
            path_str(&index),
            "--no-progress",
        ],
    );
    let server = Server::start(&[
        "--index",
        path_str(&index),
        "--query-model",
        path_str(&g.query_model),
        "--fashion-mnist",
        path_str(fm.root()),
    ]);
    let r = http::get(server.addr, "/gallery/train%2F3/image");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/png"));
    let shown = image::load_from_memory(&r.body).unwrap().to_luma8();
    let set = fm.load(hetvis_models::data::Split::Train).unwrap();
    assert_eq!(shown.as_raw().as_slice(), set.image(3));
    // Only records of the index: train/30 exists in the data set but was not indexed.
    assert_eq!(
        http::get(server.addr, "/gallery/train%2F30/image").status,
        404
    );
}
