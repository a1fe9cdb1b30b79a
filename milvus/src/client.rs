//! [`Client`]: one connection to a Milvus proxy and the operations a gallery collection needs.

use std::time::{Duration, Instant};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::convert::{self, check};
use crate::proto::common::{ConsistencyLevel, DslType, KeyValuePair};
use crate::proto::milvus::milvus_service_client::MilvusServiceClient;
use crate::proto::milvus::{self as pb};
use crate::proto::schema::{CollectionSchema, DataType, FieldSchema};
use crate::{
    CollectionInfo, CollectionSpec, Hit, MilvusError, Row, ID_FIELD, LABEL_FIELD, MAX_ID_LEN,
    META_FIELD, VECTOR_FIELD,
};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `http://host:19530` (or `host:19530`).
    pub uri: String,
    /// `user:password`, or an API key; none for a server without authentication.
    pub token: Option<String>,
    /// The database (Milvus's `default` when none).
    pub database: Option<String>,
    /// Limit of every call, connecting included: a stopped or hung Milvus is an error, never a hang.
    pub timeout: Duration,
}

impl ConnectOptions {
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            token: None,
            database: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A Milvus client. Cheap to clone (the connection is shared); connects lazily and reconnects by itself after
/// Milvus comes back.
#[derive(Clone)]
pub struct Client {
    inner: MilvusServiceClient<Channel>,
    uri: String,
    auth: Option<MetadataValue<Ascii>>,
    database: Option<MetadataValue<Ascii>>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("uri", &self.uri).finish()
    }
}

impl Client {
    /// A client of the Milvus at `options.uri`. Nothing is sent until the first call.
    pub fn new(options: &ConnectOptions) -> Result<Self, MilvusError> {
        let endpoint = crate::endpoint(&options.uri, options.timeout)?;
        let auth = options
            .token
            .as_deref()
            .map(crate::authorization)
            .transpose()?;
        let database = options
            .database
            .as_deref()
            .map(|d| {
                MetadataValue::try_from(d)
                    .map_err(|e| MilvusError::Invalid(format!("database: {e}")))
            })
            .transpose()?;
        Ok(Self {
            inner: MilvusServiceClient::new(crate::channel(&endpoint))
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
            uri: options.uri.clone(),
            auth,
            database,
            timeout: options.timeout,
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(self.timeout);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        if let Some(d) = &self.database {
            r.metadata_mut().insert("dbname", d.clone());
        }
        r
    }

    fn rpc_error(&self, what: &str, status: tonic::Status) -> MilvusError {
        use tonic::Code;
        match status.code() {
            Code::Unavailable | Code::Unknown
                if status.message().contains("transport") || status.code() == Code::Unavailable =>
            {
                MilvusError::Unreachable {
                    uri: self.uri.clone(),
                    reason: status.message().to_owned(),
                }
            }
            Code::DeadlineExceeded | Code::Cancelled => MilvusError::Timeout {
                what: what.to_owned(),
                timeout: self.timeout,
            },
            _ => MilvusError::Server {
                what: what.to_owned(),
                reason: format!("{:?}: {}", status.code(), status.message()),
            },
        }
    }

    /// Whether Milvus says it is healthy.
    pub async fn check_health(&self) -> Result<(), MilvusError> {
        let r = self
            .inner
            .clone()
            .check_health(self.request(pb::CheckHealthRequest {}))
            .await
            .map_err(|e| self.rpc_error("health check", e))?
            .into_inner();
        check("health check", r.status.as_ref())?;
        if r.is_healthy {
            Ok(())
        } else {
            Err(MilvusError::Server {
                what: "health check".into(),
                reason: format!("not healthy: {}", r.reasons.join("; ")),
            })
        }
    }

    pub async fn has_collection(&self, name: &str) -> Result<bool, MilvusError> {
        let r = self
            .inner
            .clone()
            .has_collection(self.request(pb::HasCollectionRequest {
                collection_name: name.into(),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("has_collection", e))?
            .into_inner();
        check("has_collection", r.status.as_ref())?;
        Ok(r.value)
    }

    /// Creates a gallery collection with its HNSW index (inner product) and loads it for search.
    pub async fn create_collection(&self, spec: &CollectionSpec) -> Result<(), MilvusError> {
        let varchar = |name: &str, primary: bool| FieldSchema {
            name: name.into(),
            is_primary_key: primary,
            data_type: DataType::VarChar as i32,
            type_params: vec![kv("max_length", MAX_ID_LEN.to_string())],
            ..Default::default()
        };
        let schema = CollectionSchema {
            name: spec.name.clone(),
            description: spec.description.clone(),
            fields: vec![
                varchar(ID_FIELD, true),
                FieldSchema {
                    name: VECTOR_FIELD.into(),
                    data_type: DataType::FloatVector as i32,
                    type_params: vec![kv("dim", spec.dim.to_string())],
                    ..Default::default()
                },
                varchar(LABEL_FIELD, false),
                FieldSchema {
                    name: META_FIELD.into(),
                    data_type: DataType::Json as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let r = self
            .inner
            .clone()
            .create_collection(self.request(pb::CreateCollectionRequest {
                collection_name: spec.name.clone(),
                schema: prost::Message::encode_to_vec(&schema),
                shards_num: 1,
                consistency_level: ConsistencyLevel::Bounded as i32,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("create_collection", e))?
            .into_inner();
        check("create_collection", Some(&r))?;
        let params =
            serde_json::json!({"M": spec.m, "efConstruction": spec.ef_construction}).to_string();
        let r = self
            .inner
            .clone()
            .create_index(self.request(pb::CreateIndexRequest {
                collection_name: spec.name.clone(),
                field_name: VECTOR_FIELD.into(),
                extra_params: vec![
                    kv("index_type", "HNSW"),
                    kv("metric_type", "IP"),
                    kv("params", params),
                ],
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("create_index", e))?
            .into_inner();
        check("create_index", Some(&r))?;
        self.load(&spec.name).await
    }

    /// Loads a collection for search and waits until it is loaded.
    pub async fn load(&self, name: &str) -> Result<(), MilvusError> {
        let r = self
            .inner
            .clone()
            .load_collection(self.request(pb::LoadCollectionRequest {
                collection_name: name.into(),
                replica_number: 1,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("load_collection", e))?
            .into_inner();
        check("load_collection", Some(&r))?;
        let started = Instant::now();
        loop {
            let p = self
                .inner
                .clone()
                .get_loading_progress(self.request(pb::GetLoadingProgressRequest {
                    collection_name: name.into(),
                    ..Default::default()
                }))
                .await
                .map_err(|e| self.rpc_error("get_loading_progress", e))?
                .into_inner();
            check("get_loading_progress", p.status.as_ref())?;
            if p.progress >= 100 {
                return Ok(());
            }
            if started.elapsed() > self.timeout * 6 {
                return Err(MilvusError::Timeout {
                    what: format!("loading collection {name}"),
                    timeout: self.timeout * 6,
                });
            }
            tokio_sleep(Duration::from_millis(200)).await;
        }
    }

    /// The collection's description and vector dimension.
    pub async fn describe(&self, name: &str) -> Result<CollectionInfo, MilvusError> {
        let r = self
            .inner
            .clone()
            .describe_collection(self.request(pb::DescribeCollectionRequest {
                collection_name: name.into(),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("describe_collection", e))?
            .into_inner();
        check("describe_collection", r.status.as_ref())?;
        let schema = r.schema.ok_or_else(|| MilvusError::Malformed {
            what: "describe_collection".into(),
            reason: "no schema".into(),
        })?;
        convert::collection_info(&schema)
    }

    pub async fn drop_collection(&self, name: &str) -> Result<(), MilvusError> {
        let r = self
            .inner
            .clone()
            .drop_collection(self.request(pb::DropCollectionRequest {
                collection_name: name.into(),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("drop_collection", e))?
            .into_inner();
        check("drop_collection", Some(&r))
    }

    /// Inserts rows (one request; callers batch); returns how many Milvus took.
    pub async fn insert(&self, name: &str, rows: &[Row]) -> Result<usize, MilvusError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let fields = convert::columns(rows)?;
        let r = self
            .inner
            .clone()
            .insert(self.request(pb::InsertRequest {
                collection_name: name.into(),
                fields_data: fields,
                num_rows: rows.len() as u32,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("insert", e))?
            .into_inner();
        check("insert", r.status.as_ref())?;
        Ok(usize::try_from(r.insert_cnt).unwrap_or(0))
    }

    /// Deletes rows by id; returns how many Milvus reports deleted.
    pub async fn delete(&self, name: &str, ids: &[String]) -> Result<usize, MilvusError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let r = self
            .inner
            .clone()
            .delete(self.request(pb::DeleteRequest {
                collection_name: name.into(),
                expr: convert::ids_expr(ids),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("delete", e))?
            .into_inner();
        check("delete", r.status.as_ref())?;
        Ok(usize::try_from(r.delete_cnt).unwrap_or(0))
    }

    /// Rows the vector index covers, and rows in the collection (Milvus builds the index in the background).
    pub async fn index_progress(&self, name: &str) -> Result<(u64, u64), MilvusError> {
        let r = self
            .inner
            .clone()
            .describe_index(self.request(pb::DescribeIndexRequest {
                collection_name: name.into(),
                field_name: VECTOR_FIELD.into(),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("describe_index", e))?
            .into_inner();
        check("describe_index", r.status.as_ref())?;
        let d = r
            .index_descriptions
            .first()
            .ok_or_else(|| MilvusError::Malformed {
                what: "describe_index".into(),
                reason: "no index".into(),
            })?;
        let n = |x: i64| u64::try_from(x).unwrap_or(0);
        Ok((n(d.indexed_rows), n(d.total_rows)))
    }

    /// Rows in the segments the query nodes serve, and how many of those rows they serve through the vector
    /// index (the rest is scanned, or searched through an interim index while the built one is handed over).
    pub async fn served_rows(&self, name: &str) -> Result<(u64, u64), MilvusError> {
        let r = self
            .inner
            .clone()
            .get_query_segment_info(self.request(pb::GetQuerySegmentInfoRequest {
                collection_name: name.into(),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("get_query_segment_info", e))?
            .into_inner();
        check("get_query_segment_info", r.status.as_ref())?;
        let n = |x: i64| u64::try_from(x).unwrap_or(0);
        let total = r.infos.iter().map(|i| n(i.num_rows)).sum();
        let indexed = r
            .infos
            .iter()
            .filter(|i| i.index_id != 0 || !i.index_name.is_empty())
            .map(|i| n(i.num_rows))
            .sum();
        Ok((indexed, total))
    }

    /// Seals the collection's growing data (after a bulk insert), so its count and index cover it.
    pub async fn flush(&self, name: &str) -> Result<(), MilvusError> {
        let r = self
            .inner
            .clone()
            .flush(self.request(pb::FlushRequest {
                collection_names: vec![name.into()],
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("flush", e))?
            .into_inner();
        check("flush", r.status.as_ref())
    }

    /// The `k` nearest rows of each query by HNSW with `ef`, best first. `strong` waits for every acknowledged
    /// write to be visible (a test, or a read after a write); otherwise bounded staleness (Milvus's default).
    pub async fn search(
        &self,
        name: &str,
        queries: &[Vec<f32>],
        k: usize,
        ef: usize,
        strong: bool,
    ) -> Result<Vec<Vec<Hit>>, MilvusError> {
        let r = self
            .inner
            .clone()
            .search(self.request(pb::SearchRequest {
                collection_name: name.into(),
                search_input: Some(pb::search_request::SearchInput::PlaceholderGroup(
                    crate::encode_placeholders(queries),
                )),
                dsl_type: DslType::BoolExprV1 as i32,
                output_fields: vec![LABEL_FIELD.into(), META_FIELD.into()],
                search_params: vec![
                    kv("anns_field", VECTOR_FIELD),
                    kv("topk", k.to_string()),
                    kv("metric_type", "IP"),
                    kv("params", serde_json::json!({"ef": ef.max(k)}).to_string()),
                    kv("round_decimal", "-1"),
                ],
                nq: queries.len() as i64,
                consistency_level: consistency(strong) as i32,
                use_default_consistency: false,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.rpc_error("search", e))?
            .into_inner();
        check("search", r.status.as_ref())?;
        match r.results {
            Some(data) => convert::hits(&data, queries.len()),
            None => Ok(vec![Vec::new(); queries.len()]),
        }
    }

    /// Rows in the collection (deleted ones excluded).
    pub async fn count(&self, name: &str, strong: bool) -> Result<u64, MilvusError> {
        let fields = self.query(name, "", &["count(*)"], strong).await?;
        convert::count(&fields)
    }

    /// Which of `ids` are in the collection.
    pub async fn existing_ids(
        &self,
        name: &str,
        ids: &[String],
        strong: bool,
    ) -> Result<Vec<String>, MilvusError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let fields = self
            .query(name, &convert::ids_expr(ids), &[ID_FIELD], strong)
            .await?;
        convert::string_column(&fields, ID_FIELD)
    }

    /// Up to `limit` stored rows (id and vector) with ids after `after`, in id order: a page of a full scan,
    /// the next starting after the last id of this one. Milvus answers queries merged by primary key; a page that
    /// is not in order is refused rather than letting a scan skip rows.
    pub async fn rows_after(
        &self,
        name: &str,
        after: &str,
        limit: usize,
        dim: usize,
    ) -> Result<Vec<(String, Vec<f32>)>, MilvusError> {
        let fields = self
            .query_limited(
                name,
                &convert::ids_after_expr(after),
                &[ID_FIELD, VECTOR_FIELD],
                true,
                Some(limit),
            )
            .await?;
        let ids = convert::string_column(&fields, ID_FIELD)?;
        let vectors = convert::vector_column(&fields, VECTOR_FIELD, dim)?;
        if ids.len() != vectors.len() {
            return Err(crate::convert::malformed(
                "query",
                format!("{} ids but {} vectors", ids.len(), vectors.len()),
            ));
        }
        if ids.windows(2).any(|w| w[0] >= w[1])
            || ids.first().is_some_and(|id| id.as_str() <= after)
        {
            return Err(crate::convert::malformed(
                "query",
                "a page of rows not in id order",
            ));
        }
        Ok(ids.into_iter().zip(vectors).collect())
    }

    async fn query(
        &self,
        name: &str,
        expr: &str,
        output: &[&str],
        strong: bool,
    ) -> Result<Vec<crate::proto::schema::FieldData>, MilvusError> {
        self.query_limited(name, expr, output, strong, None).await
    }

    async fn query_limited(
        &self,
        name: &str,
        expr: &str,
        output: &[&str],
        strong: bool,
        limit: Option<usize>,
    ) -> Result<Vec<crate::proto::schema::FieldData>, MilvusError> {
        let r = self
            .inner
            .clone()
            .query(
                self.request(pb::QueryRequest {
                    collection_name: name.into(),
                    expr: expr.into(),
                    output_fields: output.iter().map(|s| s.to_string()).collect(),
                    query_params: limit
                        .map(|n| vec![kv("limit", n.to_string())])
                        .unwrap_or_default(),
                    consistency_level: consistency(strong) as i32,
                    use_default_consistency: false,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| self.rpc_error("query", e))?
            .into_inner();
        check("query", r.status.as_ref())?;
        Ok(r.fields_data)
    }
}

fn consistency(strong: bool) -> ConsistencyLevel {
    if strong {
        ConsistencyLevel::Strong
    } else {
        ConsistencyLevel::Bounded
    }
}

fn kv(key: &str, value: impl Into<String>) -> KeyValuePair {
    KeyValuePair {
        key: key.into(),
        value: value.into(),
    }
}

async fn tokio_sleep(d: Duration) {
    // tonic brings tokio's timer; no runtime of our own is assumed beyond the caller's.
    tokio::time::sleep(d).await
}
