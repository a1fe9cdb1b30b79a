//! `POST /gallery` end to end: bearer auth, bulk add embedded with the gallery model, duplicates refused, the
//! additions searchable, their images served, and everything still there after a restart (persisted).

use hetvis_tests::fixtures::{png, Gallery};
use hetvis_tests::http::{self, Part, Response};
use hetvis_tests::server::Server;

fn upload(server: &Server, token: Option<&str>, parts: &[Part]) -> Response {
    http::upload(server.addr, token, parts)
}

fn size(server: &Server) -> u64 {
    http::get(server.addr, "/v1/info").json()["index"]["size"]
        .as_u64()
        .unwrap()
}

/// Top paragon hit for an image: the gallery model finds an added image itself.
fn top(server: &Server, image: &[u8]) -> (String, f64) {
    let r = http::post(server.addr, "/search?k=1&mode=paragon", "image/png", image);
    assert_eq!(r.status, 200, "{}", r.text());
    let hit = &r.json()["results"][0];
    (
        hit["id"].as_str().unwrap().to_owned(),
        hit["score"].as_f64().unwrap(),
    )
}

#[test]
fn uploads_need_the_token_are_all_or_nothing_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Gallery::build(&tmp.path().join("fixture"));
    let index = tmp.path().join("live-idx");
    g.copy_index(&index);
    let store = tmp.path().join("store");
    let mut args = g.args();
    args[1] = index.to_str().unwrap().to_owned();
    args.extend(
        [
            "--admin-token",
            "s3cret",
            "--image-store",
            store.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);

    let (a, b, c) = (png(500), png(501), png(502));
    let parts = [
        Part::Text {
            name: "id",
            value: "new/a",
        },
        Part::Text {
            name: "label",
            value: "fresh",
        },
        Part::File {
            name: "image",
            filename: Some("ignored.png"),
            content_type: "image/png",
            bytes: &a,
        },
        Part::File {
            name: "image",
            filename: Some("new-b.png"),
            content_type: "image/png",
            bytes: &b,
        },
    ];
    // Missing and wrong tokens.
    let r = upload(&server, None, &parts);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert!(r.json()["error"].as_str().unwrap().contains("token"));
    assert_eq!(upload(&server, Some("guess"), &parts).status, 401);
    assert_eq!(size(&server), 24);

    // The right token adds both; the `id` field names the first, the filename the second.
    let r = upload(&server, Some("s3cret"), &parts);
    assert_eq!(r.status, 201, "{}", r.text());
    let added = r.json();
    assert_eq!(added["added"], 2);
    assert_eq!(added["ids"], serde_json::json!(["new/a", "new-b.png"]));
    assert_eq!(added["index_size"], 26);
    assert_eq!(size(&server), 26);
    let (id, score) = top(&server, &a);
    assert_eq!(id, "new/a");
    assert!((score - 1.0).abs() < 1e-4, "{score}");
    assert_eq!(top(&server, &b).0, "new-b.png");
    let r = http::get(server.addr, "/gallery/new%2Fa/image");
    assert_eq!((r.status, &r.body), (200, &a));

    // Duplicates (against the index, or within one request), a bad image, a part without an id: nothing added.
    let dup = [Part::File {
        name: "image",
        filename: Some("new-b.png"),
        content_type: "image/png",
        bytes: &c,
    }];
    assert_eq!(upload(&server, Some("s3cret"), &dup).status, 409);
    let twice = [
        Part::File {
            name: "image",
            filename: Some("x.png"),
            content_type: "image/png",
            bytes: &c,
        },
        Part::File {
            name: "image",
            filename: Some("x.png"),
            content_type: "image/png",
            bytes: &c,
        },
    ];
    assert_eq!(upload(&server, Some("s3cret"), &twice).status, 409);
    let bad = [
        Part::File {
            name: "image",
            filename: Some("ok.png"),
            content_type: "image/png",
            bytes: &c,
        },
        Part::File {
            name: "image",
            filename: Some("junk.png"),
            content_type: "image/png",
            bytes: b"junk",
        },
    ];
    let r = upload(&server, Some("s3cret"), &bad);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("junk.png"));
    let anonymous = [Part::File {
        name: "image",
        filename: None,
        content_type: "image/png",
        bytes: &c,
    }];
    assert_eq!(upload(&server, Some("s3cret"), &anonymous).status, 400);
    assert_eq!(size(&server), 26);

    // Persisted: a restarted server has them.
    assert!(server.terminate().success());
    let server = Server::start(&args);
    assert_eq!(size(&server), 26);
    assert_eq!(top(&server, &a).0, "new/a");
    assert_eq!(http::get(server.addr, "/gallery/new%2Fa/image").body, a);
    drop(server);

    // Without --admin-token, uploads are disabled outright.
    let plain: Vec<&str> = args[..args.len() - 4].to_vec();
    let server = Server::start(&plain);
    let r = upload(&server, Some("s3cret"), &parts);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("--admin-token"));
}
