//! Between hetvis's rows and hits and Milvus's columns and statuses.

use crate::proto::common::Status;
use crate::proto::schema::{
    field_data, scalar_field, vector_field, CollectionSchema, DataType, FieldData, FloatArray,
    JsonArray, ScalarField, SearchResultData, StringArray, VectorField,
};
use crate::{
    CollectionInfo, Hit, MilvusError, Row, ID_FIELD, LABEL_FIELD, MAX_ID_LEN, META_FIELD,
    VECTOR_FIELD,
};

/// Fails unless `status` says success (2.3 sets `error_code`, later versions `code`).
pub fn check(what: &str, status: Option<&Status>) -> Result<(), MilvusError> {
    match status {
        #[allow(deprecated)]
        Some(s) if s.error_code != 0 || s.code != 0 => Err(MilvusError::Server {
            what: what.to_owned(),
            #[allow(deprecated)]
            reason: format!(
                "{} (error code {}, code {})",
                s.reason, s.error_code, s.code
            ),
        }),
        _ => Ok(()),
    }
}

pub(crate) fn malformed(what: &str, reason: impl Into<String>) -> MilvusError {
    MilvusError::Malformed {
        what: what.to_owned(),
        reason: reason.into(),
    }
}

/// A boolean expression matching `ids` exactly (ids are JSON-quoted, so quotes and backslashes in them are safe).
pub fn ids_expr(ids: &[String]) -> String {
    let quoted: Vec<String> = ids
        .iter()
        .map(|id| serde_json::Value::String(id.clone()).to_string())
        .collect();
    format!("{ID_FIELD} in [{}]", quoted.join(","))
}

/// Rows whose id sorts after `after` (every id is non-empty, so `""` starts at the beginning).
pub fn ids_after_expr(after: &str) -> String {
    format!(
        "{ID_FIELD} > {}",
        serde_json::Value::String(after.to_owned())
    )
}

/// Rows as the four columns of a gallery collection.
pub fn columns(rows: &[Row]) -> Result<Vec<FieldData>, MilvusError> {
    let dim = rows[0].vector.len();
    let mut vectors = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        if r.vector.len() != dim {
            return Err(MilvusError::Invalid(format!(
                "row {:?}: {} floats, expected {dim}",
                r.id,
                r.vector.len()
            )));
        }
        if r.id.is_empty()
            || r.id.len() > MAX_ID_LEN
            || r.label.as_ref().is_some_and(|l| l.len() > MAX_ID_LEN)
        {
            return Err(MilvusError::Invalid(format!(
                "row {:?}: ids and labels are 1 to {MAX_ID_LEN} bytes",
                r.id
            )));
        }
        vectors.extend_from_slice(&r.vector);
    }
    let strings = |name: &str, data: Vec<String>| FieldData {
        r#type: DataType::VarChar as i32,
        field_name: name.into(),
        field: Some(field_data::Field::Scalars(ScalarField {
            data: Some(scalar_field::Data::StringData(StringArray { data })),
            ..Default::default()
        })),
        ..Default::default()
    };
    let metas = rows
        .iter()
        .map(|r| match &r.meta {
            Some(m) if m.is_object() => Ok(m.to_string().into_bytes()),
            // A JSON field holds objects: anything else is wrapped, and unwrapped again on the way out.
            Some(m) => Ok(serde_json::json!({ "value": m }).to_string().into_bytes()),
            None => Ok(b"{}".to_vec()),
        })
        .collect::<Result<Vec<_>, MilvusError>>()?;
    Ok(vec![
        strings(ID_FIELD, rows.iter().map(|r| r.id.clone()).collect()),
        FieldData {
            r#type: DataType::FloatVector as i32,
            field_name: VECTOR_FIELD.into(),
            field: Some(field_data::Field::Vectors(VectorField {
                dim: dim as i64,
                data: Some(vector_field::Data::FloatVector(FloatArray {
                    data: vectors,
                })),
                ..Default::default()
            })),
            ..Default::default()
        },
        strings(
            LABEL_FIELD,
            rows.iter()
                .map(|r| r.label.clone().unwrap_or_default())
                .collect(),
        ),
        FieldData {
            r#type: DataType::Json as i32,
            field_name: META_FIELD.into(),
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::JsonData(JsonArray { data: metas })),
                ..Default::default()
            })),
            ..Default::default()
        },
    ])
}

fn scalar<'a>(fields: &'a [FieldData], name: &str) -> Option<&'a scalar_field::Data> {
    fields
        .iter()
        .find(|f| f.field_name == name)
        .and_then(|f| match &f.field {
            Some(field_data::Field::Scalars(s)) => s.data.as_ref(),
            _ => None,
        })
}

/// A VARCHAR output column.
pub fn string_column(fields: &[FieldData], name: &str) -> Result<Vec<String>, MilvusError> {
    match scalar(fields, name) {
        Some(scalar_field::Data::StringData(s)) => Ok(s.data.clone()),
        None if fields.is_empty() => Ok(Vec::new()),
        _ => Err(malformed("query", format!("no string column {name}"))),
    }
}

/// A FLOAT_VECTOR output column of `dim`-d vectors, one per row.
pub fn vector_column(
    fields: &[FieldData],
    name: &str,
    dim: usize,
) -> Result<Vec<Vec<f32>>, MilvusError> {
    let column = fields.iter().find(|f| f.field_name == name);
    match column.and_then(|f| match &f.field {
        Some(field_data::Field::Vectors(v)) => Some(v),
        _ => None,
    }) {
        Some(v) => match &v.data {
            Some(vector_field::Data::FloatVector(a)) if dim > 0 && a.data.len() % dim == 0 => {
                Ok(a.data.chunks(dim).map(<[f32]>::to_vec).collect())
            }
            _ => Err(malformed(
                "query",
                format!("column {name} is no float vector column of dimension {dim}"),
            )),
        },
        None if fields.is_empty() => Ok(Vec::new()),
        None => Err(malformed("query", format!("no vector column {name}"))),
    }
}

/// The `count(*)` of a query.
pub fn count(fields: &[FieldData]) -> Result<u64, MilvusError> {
    match scalar(fields, "count(*)") {
        Some(scalar_field::Data::LongData(l)) => l
            .data
            .first()
            .and_then(|&n| u64::try_from(n).ok())
            .ok_or_else(|| malformed("count", "no count")),
        _ => Err(malformed("count", "no count(*) column")),
    }
}

fn meta_value(bytes: &[u8]) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    match v {
        serde_json::Value::Object(ref o) if o.is_empty() => None,
        serde_json::Value::Object(ref o) if o.len() == 1 && o.contains_key("value") => {
            o.get("value").cloned()
        }
        other => Some(other),
    }
}

/// Per-query hits from a search answer of `nq` queries.
pub fn hits(data: &SearchResultData, nq: usize) -> Result<Vec<Vec<Hit>>, MilvusError> {
    let ids: &[String] = match data.ids.as_ref().and_then(|i| i.id_field.as_ref()) {
        Some(crate::proto::schema::i_ds::IdField::StrId(s)) => &s.data,
        None => &[],
        Some(_) => return Err(malformed("search", "ids are not strings")),
    };
    if ids.len() != data.scores.len() {
        return Err(malformed(
            "search",
            format!("{} ids for {} scores", ids.len(), data.scores.len()),
        ));
    }
    let labels = match scalar(&data.fields_data, LABEL_FIELD) {
        Some(scalar_field::Data::StringData(s)) => s.data.clone(),
        _ => vec![String::new(); ids.len()],
    };
    let metas: Vec<Option<serde_json::Value>> = match scalar(&data.fields_data, META_FIELD) {
        Some(scalar_field::Data::JsonData(j)) => j.data.iter().map(|b| meta_value(b)).collect(),
        _ => vec![None; ids.len()],
    };
    if labels.len() != ids.len() || metas.len() != ids.len() {
        return Err(malformed(
            "search",
            "output columns and ids differ in length",
        ));
    }
    let topks: Vec<usize> = if data.topks.is_empty() && nq <= 1 {
        vec![ids.len()]
    } else {
        data.topks
            .iter()
            .map(|&k| usize::try_from(k).unwrap_or(0))
            .collect()
    };
    if topks.len() != nq || topks.iter().sum::<usize>() != ids.len() {
        return Err(malformed(
            "search",
            format!("topks {topks:?} for {nq} queries and {} hits", ids.len()),
        ));
    }
    let mut out = Vec::with_capacity(nq);
    let mut at = 0;
    for k in topks {
        out.push(
            (at..at + k)
                .map(|i| Hit {
                    id: ids[i].clone(),
                    score: data.scores[i],
                    label: Some(labels[i].clone()).filter(|l| !l.is_empty()),
                    meta: metas[i].clone(),
                })
                .collect(),
        );
        at += k;
    }
    Ok(out)
}

/// Description and dimension of a collection made by [`crate::Client::create_collection`].
pub fn collection_info(schema: &CollectionSchema) -> Result<CollectionInfo, MilvusError> {
    let vector = schema
        .fields
        .iter()
        .find(|f| f.name == VECTOR_FIELD && f.data_type == DataType::FloatVector as i32)
        .ok_or_else(|| {
            malformed(
                "describe_collection",
                format!("no float vector field {VECTOR_FIELD:?}: not a hetvis gallery collection"),
            )
        })?;
    let dim = vector
        .type_params
        .iter()
        .find(|p| p.key == "dim")
        .and_then(|p| p.value.parse().ok())
        .ok_or_else(|| malformed("describe_collection", "the vector field has no dimension"))?;
    Ok(CollectionInfo {
        description: schema.description.clone(),
        dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_expressions_quote_ids_safely() {
        assert_eq!(
            ids_expr(&["a".into(), "b\"c".into()]),
            r#"id in ["a","b\"c"]"#
        );
    }

    #[test]
    fn scan_pages_start_after_the_last_id() {
        assert_eq!(ids_after_expr(""), r#"id > """#);
        assert_eq!(ids_after_expr("a\"b"), r#"id > "a\"b""#);
    }

    #[test]
    fn vector_columns_split_by_dimension() {
        let rows = vec![
            Row {
                id: "a".into(),
                vector: vec![1.0, 2.0],
                label: None,
                meta: None,
            },
            Row {
                id: "b".into(),
                vector: vec![3.0, 4.0],
                label: None,
                meta: None,
            },
        ];
        let fields = columns(&rows).unwrap();
        assert_eq!(
            vector_column(&fields, VECTOR_FIELD, 2).unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        assert!(vector_column(&fields, VECTOR_FIELD, 3).is_err());
        assert!(vector_column(&fields, "other", 2).is_err());
        assert!(vector_column(&[], VECTOR_FIELD, 2).unwrap().is_empty());
    }

    #[test]
    fn metas_round_trip_through_the_json_column() {
        for m in [
            None,
            Some(serde_json::json!({"i": 1})),
            Some(serde_json::json!([1, 2])),
            Some(serde_json::json!("s")),
        ] {
            let rows = vec![Row {
                id: "x".into(),
                vector: vec![1.0],
                label: None,
                meta: m.clone(),
            }];
            let cols = columns(&rows).unwrap();
            let Some(scalar_field::Data::JsonData(j)) = scalar(&cols, META_FIELD) else {
                panic!()
            };
            assert_eq!(meta_value(&j.data[0]), m);
        }
    }

    #[test]
    fn hits_are_split_per_query_and_checked() {
        let data = SearchResultData {
            scores: vec![0.9, 0.5, 0.7],
            ids: Some(crate::proto::schema::IDs {
                id_field: Some(crate::proto::schema::i_ds::IdField::StrId(StringArray {
                    data: vec!["a".into(), "b".into(), "c".into()],
                })),
            }),
            topks: vec![2, 1],
            ..Default::default()
        };
        let h = hits(&data, 2).unwrap();
        assert_eq!(
            h[0].iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(h[1][0].score, 0.7);
        assert!(hits(&data, 3).is_err());
    }

    #[test]
    fn rows_of_mixed_dimension_or_oversized_ids_are_refused() {
        let row = |id: &str, n: usize| Row {
            id: id.into(),
            vector: vec![0.5; n],
            label: None,
            meta: None,
        };
        assert!(columns(&[row("a", 2), row("b", 3)]).is_err());
        assert!(columns(&[row(&"x".repeat(MAX_ID_LEN + 1), 2)]).is_err());
        assert!(columns(&[row("", 2)]).is_err());
    }
}
