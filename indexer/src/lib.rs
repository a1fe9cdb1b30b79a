//! `hetvis-indexer`: embeds a gallery with the gallery model and keeps a persistent nearest-neighbour index.

pub mod flat;
