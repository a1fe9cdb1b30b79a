//! Against a real Milvus (2.3.5, started by `scripts/milvus.sh`): `HETVIS_TEST_MILVUS=http://127.0.0.1:PORT`.
//! `make test` starts one and runs these with `--ignored`; run alone they say what they need.

use hetvis_milvus::{Client, CollectionSpec, ConnectOptions, Row};

fn client() -> Client {
    let uri = std::env::var("HETVIS_TEST_MILVUS").expect(
        "HETVIS_TEST_MILVUS is not set: these tests need a Milvus server; `make test` starts one (scripts/milvus.sh)",
    );
    Client::new(&ConnectOptions::new(uri)).unwrap()
}

fn unit(i: usize, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim)
        .map(|d| ((i as u64 * 2_654_435_761 + d as u64 * 40_503) % 1_009) as f32 - 504.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

#[tokio::test]
#[ignore = "needs a Milvus server: make test starts one"]
async fn a_gallery_collection_round_trips_rows_searches_and_deletes() {
    let c = client();
    c.check_health().await.unwrap();
    let name = "hetvis_client_round_trip";
    if c.has_collection(name).await.unwrap() {
        c.drop_collection(name).await.unwrap();
    }
    let spec = CollectionSpec {
        name: name.into(),
        dim: 16,
        description: r#"{"hetvis": 1}"#.into(),
        m: 16,
        ef_construction: 100,
    };
    c.create_collection(&spec).await.unwrap();
    let info = c.describe(name).await.unwrap();
    assert_eq!(
        (info.dim, info.description.as_str()),
        (16, r#"{"hetvis": 1}"#)
    );
    let rows: Vec<Row> = (0..300)
        .map(|i| Row {
            id: format!("item/{i} \"q\""),
            vector: unit(i, 16),
            label: (i % 2 == 0).then(|| format!("c{}", i % 5)),
            meta: (i % 3 == 0).then(|| serde_json::json!({"i": i})),
        })
        .collect();
    assert_eq!(c.insert(name, &rows).await.unwrap(), 300);
    assert_eq!(c.count(name, true).await.unwrap(), 300);
    let hits = c
        .search(name, &[unit(42, 16), unit(7, 16)], 5, 64, true)
        .await
        .unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0][0].id, "item/42 \"q\"");
    assert!((hits[0][0].score - 1.0).abs() < 1e-4, "{:?}", hits[0][0]);
    assert_eq!(hits[0][0].label.as_deref(), Some("c2"));
    assert_eq!(hits[0][0].meta, Some(serde_json::json!({"i": 42})));
    assert_eq!(hits[1][0].id, "item/7 \"q\"");
    assert_eq!(
        (hits[1][0].label.as_deref(), &hits[1][0].meta),
        (None, &None)
    );
    let gone = vec!["item/42 \"q\"".to_owned()];
    assert_eq!(c.existing_ids(name, &gone, true).await.unwrap(), gone);
    c.delete(name, &gone).await.unwrap();
    assert!(c.existing_ids(name, &gone, true).await.unwrap().is_empty());
    assert_eq!(c.count(name, true).await.unwrap(), 299);
    let hits = c.search(name, &[unit(42, 16)], 5, 64, true).await.unwrap();
    assert!(hits[0].iter().all(|h| h.id != gone[0]));

    // A full scan in pages of 64 reads every remaining row once, in id order, with its vector.
    let mut scanned: Vec<(String, Vec<f32>)> = Vec::new();
    loop {
        let after = scanned.last().map_or(String::new(), |(id, _)| id.clone());
        let page = c.rows_after(name, &after, 64, 16).await.unwrap();
        let last = page.len() < 64;
        scanned.extend(page);
        if last {
            break;
        }
    }
    assert_eq!(scanned.len(), 299);
    assert!(scanned.windows(2).all(|w| w[0].0 < w[1].0));
    let seven = scanned.iter().find(|(id, _)| id == "item/7 \"q\"").unwrap();
    assert_eq!(seven.1, unit(7, 16));
    assert!(scanned.iter().all(|(id, _)| id != &gone[0]));
    c.drop_collection(name).await.unwrap();
    assert!(!c.has_collection(name).await.unwrap());
}

#[tokio::test]
#[ignore = "needs a Milvus server: make test starts one"]
async fn an_unreachable_milvus_is_an_error_not_a_hang() {
    let _ = client();
    let mut o = ConnectOptions::new("http://127.0.0.1:9");
    o.timeout = std::time::Duration::from_secs(2);
    let c = Client::new(&o).unwrap();
    let started = std::time::Instant::now();
    let err = c.check_health().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
