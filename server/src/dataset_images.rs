//! Gallery images of a Fashion-MNIST index (`hetvis-index build --source fashion-mnist:train`), whose records
//! have no files: ids `train/<i>` and `test/<i>` are rendered from the data set as PNG. Each split is loaded on
//! first use (about 47 MB for the training split) and kept.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hetvis_models::data::fashion_mnist::{FashionMnist, Split};
use hetvis_models::data::LabelledImages;

pub struct FashionMnistImages {
    data: FashionMnist,
    /// Train, test; `None` when the split could not be read (logged once).
    splits: [OnceLock<Option<Arc<LabelledImages>>>; 2],
}

impl FashionMnistImages {
    pub fn new(root: PathBuf) -> Self {
        Self {
            data: FashionMnist::new(root),
            splits: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The record's image as PNG bytes, when `id` names one (`train/123`). Blocking: may read the data set.
    pub fn png(&self, id: &str) -> Option<Vec<u8>> {
        let (split, i) = parse(id)?;
        let slot = match split {
            Split::Train => &self.splits[0],
            Split::Test => &self.splits[1],
        };
        let set = slot
            .get_or_init(|| match self.data.load(split) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "Fashion-MNIST images unavailable for thumbnails");
                    None
                }
            })
            .as_ref()?;
        if i >= set.len() {
            return None;
        }
        let img =
            image::GrayImage::from_raw(set.cols as u32, set.rows as u32, set.image(i).to_vec())?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).ok()?;
        Some(out.into_inner())
    }
}

fn parse(id: &str) -> Option<(Split, usize)> {
    let (split, i) = id.split_once('/')?;
    let split = match split {
        "train" => Split::Train,
        "test" => Split::Test,
        _ => return None,
    };
    // Digits only: `usize::from_str` would also take a leading `+`.
    if i.is_empty() || !i.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((split, i.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_a_split_and_a_record() {
        assert_eq!(parse("train/123"), Some((Split::Train, 123)));
        assert_eq!(parse("test/0"), Some((Split::Test, 0)));
        for bad in [
            "train/",
            "train/+1",
            "val/3",
            "train/1/2",
            "train",
            "c0/01.png",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn renders_records_of_the_installed_data_set_and_refuses_others() {
        let images = FashionMnistImages::new(FashionMnist::from_env().root().to_owned());
        let png = images
            .png("test/0")
            .expect("Fashion-MNIST (run `make setup`)");
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (28, 28));
        let set = FashionMnist::from_env().load(Split::Test).unwrap();
        assert_eq!(img.as_raw().as_slice(), set.image(0));
        assert!(images.png("test/10000").is_none());
        assert!(FashionMnistImages::new("/nonexistent".into())
            .png("test/0")
            .is_none());
    }
}
