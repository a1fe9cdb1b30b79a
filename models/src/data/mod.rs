//! Data sets read from disk.

pub mod fashion_mnist;
pub mod idx;
pub mod synthetic;

pub use fashion_mnist::{FashionMnist, Split};
pub use idx::{DataError, LabelledImages};
