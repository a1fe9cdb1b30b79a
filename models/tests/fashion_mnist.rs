//! Reads the real Fashion-MNIST installed by `make setup` (Debian's dataset-fashion-mnist).

use hetvis_models::data::fashion_mnist::{FashionMnist, Split, NUM_CLASSES};

#[test]
fn reads_both_splits_with_all_ten_classes() {
    let fm = FashionMnist::from_env();
    for split in [Split::Train, Split::Test] {
        let set = fm.load(split).expect("Fashion-MNIST (run `make setup`)");
        assert_eq!(set.len(), split.expected_len());
        assert_eq!((set.rows, set.cols), (28, 28));
        assert_eq!(set.pixels.len(), set.len() * 28 * 28);
        let mut counts = [0usize; NUM_CLASSES];
        for &l in &set.labels {
            counts[l as usize] += 1;
        }
        // Fashion-MNIST is balanced: 6,000 / 1,000 images per class.
        assert!(
            counts
                .iter()
                .all(|&c| c == split.expected_len() / NUM_CLASSES),
            "{counts:?}"
        );
        // Real images, not zeros: mean intensity of Fashion-MNIST is about 73/255.
        let mean = set.pixels.iter().map(|&p| p as f64).sum::<f64>() / set.pixels.len() as f64;
        assert!((60.0..90.0).contains(&mean), "mean pixel {mean}");
    }
}

#[test]
fn a_corrupt_copy_is_refused_naming_the_file() {
    let fm = FashionMnist::from_env();
    let dir = tempfile::tempdir().unwrap();
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(fm.root().join(name), dir.path().join(name)).unwrap();
    }
    let images = dir.path().join("t10k-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 1000]).unwrap();
    let err = FashionMnist::new(dir.path()).load(Split::Test).unwrap_err();
    assert!(
        err.to_string().contains("t10k-images-idx3-ubyte.gz"),
        "{err}"
    );
}
