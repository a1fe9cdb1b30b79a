//! `hetvis-milvus`: the few Milvus operations hetvis needs, over Milvus's own gRPC protocol (generated at build
//! time from `proto/`), checked against the Milvus 2.3.5 standalone server that `make setup` installs.
//!
//! Why not the official Rust SDK: its 3.x line targets Milvus 2.6, and against 2.3.5 its search results fail to
//! parse (2.3 does not name the primary-key field in them) and a JSON column panics in its decoder. The protocol
//! itself is compatible across these versions; only the fields 2.3 knows are used here.
//!
//! A gallery collection has four fields: `id` (VARCHAR primary key), `embedding` (float vector), `label`
//! (VARCHAR, empty for none) and `meta` (JSON, `{}` for none), and an HNSW index with the inner-product metric
//! (vectors are unit length, so scores are cosines). Its description carries the caller's manifest.

use std::time::Duration;

use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

pub mod proto {
    //! The generated protocol. Packages refer to each other as siblings (`super::common`).
    #![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    pub mod common {
        tonic::include_proto!("milvus.proto.common");
    }
    pub mod schema {
        tonic::include_proto!("milvus.proto.schema");
    }
    pub mod milvus {
        tonic::include_proto!("milvus.proto.milvus");
    }
    pub mod feder {
        tonic::include_proto!("milvus.proto.feder");
    }
    pub mod msg {
        tonic::include_proto!("milvus.proto.msg");
    }
    pub mod rg {
        tonic::include_proto!("milvus.proto.rg");
    }
}

mod client;
mod convert;

pub use client::{Client, ConnectOptions};

/// Field names of a gallery collection.
pub const ID_FIELD: &str = "id";
pub const VECTOR_FIELD: &str = "embedding";
pub const LABEL_FIELD: &str = "label";
pub const META_FIELD: &str = "meta";
/// Longest id and label (bytes): the VARCHAR fields' `max_length`.
pub const MAX_ID_LEN: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum MilvusError {
    #[error("invalid Milvus address {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("cannot reach Milvus at {uri}: {reason}")]
    Unreachable { uri: String, reason: String },
    #[error("Milvus did not answer {what} within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("Milvus {what} failed: {reason}")]
    Server { what: String, reason: String },
    #[error("Milvus {what}: unexpected answer: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl MilvusError {
    /// Whether retrying may help (the server was unreachable, slow or busy), as opposed to a refused request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MilvusError::Unreachable { .. } | MilvusError::Timeout { .. }
        )
    }
}

/// One gallery item as stored in a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub vector: Vec<f32>,
    pub label: Option<String>,
    pub meta: Option<serde_json::Value>,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    /// Inner product with the query (the cosine, for unit vectors).
    pub score: f32,
    pub label: Option<String>,
    pub meta: Option<serde_json::Value>,
}

/// What a gallery collection is made with.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionSpec {
    pub name: String,
    pub dim: usize,
    /// Free text stored with the collection (hetvis keeps its index manifest there).
    pub description: String,
    /// HNSW `M` and `efConstruction`.
    pub m: usize,
    pub ef_construction: usize,
}

/// What Milvus says a collection holds.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    pub description: String,
    pub dim: usize,
}

fn encode_placeholders(vectors: &[Vec<f32>]) -> Vec<u8> {
    use proto::common::{PlaceholderGroup, PlaceholderType, PlaceholderValue};
    PlaceholderGroup {
        placeholders: vec![PlaceholderValue {
            tag: "$0".into(),
            r#type: PlaceholderType::FloatVector as i32,
            values: vectors
                .iter()
                .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
                .collect(),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The `authorization` header Milvus expects: base64 of `user:password` (or of an API key).
fn authorization(token: &str) -> Result<MetadataValue<tonic::metadata::Ascii>, MilvusError> {
    MetadataValue::try_from(base64(token.as_bytes()))
        .map_err(|e| MilvusError::Invalid(format!("token: {e}")))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn endpoint(uri: &str, timeout: Duration) -> Result<Endpoint, MilvusError> {
    let invalid = |reason: String| MilvusError::InvalidUri {
        uri: uri.to_owned(),
        reason,
    };
    let uri = if uri.contains("://") {
        uri.to_owned()
    } else {
        format!("http://{uri}")
    };
    if uri.starts_with("https://") {
        return Err(invalid(
            "TLS is not supported by this build; use http:// on a private network".into(),
        ));
    }
    Ok(Endpoint::from_shared(uri)
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true))
}

fn channel(endpoint: &Endpoint) -> Channel {
    endpoint.connect_lazy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b"root:Milvus"), "cm9vdDpNaWx2dXM=");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn placeholders_hold_each_vector_as_little_endian_floats() {
        let bytes = encode_placeholders(&[vec![1.0, -2.0]]);
        let g = proto::common::PlaceholderGroup::decode(bytes.as_slice()).unwrap();
        assert_eq!(g.placeholders[0].tag, "$0");
        assert_eq!(
            g.placeholders[0].values[0],
            [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat()
        );
    }

    #[test]
    fn https_is_refused_and_bare_host_ports_get_a_scheme() {
        assert!(endpoint("https://x:19530", Duration::from_secs(1)).is_err());
        assert!(endpoint("127.0.0.1:19530", Duration::from_secs(1)).is_ok());
    }
}
