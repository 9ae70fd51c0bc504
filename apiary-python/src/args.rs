//! What Python passes in, as Apiary takes it: storage arguments, schemas, partition
//! columns, retentions and frame names, each refused with a message that says what it takes.

use std::time::Duration;

use apiary::apiary_ledger::{Column, FrameRef, FrameSchema};
use arrow_pyarrow::FromPyArrow;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::invalid;

/// A storage argument: a `str` URI or folder, or an `os.PathLike`.
pub(crate) fn storage_text(storage: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(text) = storage.extract::<String>() {
        return Ok(text);
    }
    let py = storage.py();
    py.import("os")?
        .call_method1("fspath", (storage,))
        .and_then(|p| p.extract::<String>())
        .map_err(|_| {
            invalid(
                py,
                "storage must be a str (a folder, file://…, memory://, s3://bucket/prefix, \
                 gs://…, az://…) or a path",
            )
        })
}

/// A frame's columns from a `{name: type}` dict, a list of `(name, type)` pairs, or an Arrow
/// schema (anything with `__arrow_c_schema__`, such as `pyarrow.schema([...])`).
pub(crate) fn frame_schema(
    schema: &Bound<'_, PyAny>,
) -> PyResult<Result<FrameSchema, apiary::ApiaryError>> {
    let py = schema.py();
    let pairs: Vec<(String, String)> = if let Ok(dict) = schema.cast::<PyDict>() {
        let mut pairs = Vec::with_capacity(dict.len());
        for (name, ty) in dict.iter() {
            let name: String = name
                .extract()
                .map_err(|_| invalid(py, format!("schema key {name:?} is not a column name")))?;
            let ty: String = ty.extract().map_err(|_| {
                invalid(
                    py,
                    format!("the type of column `{name}` must be a str such as \"int64\""),
                )
            })?;
            pairs.push((name, ty));
        }
        pairs
    } else if schema.hasattr("__arrow_c_schema__")? {
        let arrow = arrow_schema::Schema::from_pyarrow_bound(schema)
            .map_err(|e| invalid(py, format!("the Arrow schema could not be read: {e}")))?;
        return Ok(FrameSchema::from_arrow(&arrow).map_err(Into::into));
    } else if let Ok(list) = schema.extract::<Vec<(String, String)>>() {
        list
    } else {
        return Err(invalid(
            py,
            "schema must be a dict of column name to type (\"int64\", \"utf8\", \
             \"timestamp(us, UTC)\", \"decimal128(10, 2)\", …), a list of (name, type) pairs, \
             or an Arrow schema",
        ));
    };
    Ok(pairs
        .iter()
        .map(|(name, ty)| {
            apiary::apiary_ledger::parse_type(ty).and_then(|t| Column::new(name, &t, true))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(FrameSchema::new)
        .map_err(Into::into))
}

/// A retention: seconds (int or float) or a `datetime.timedelta`.
pub(crate) fn retention(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    let Some(value) = value else { return Ok(None) };
    if let Ok(d) = value.extract::<Duration>() {
        return Ok(Some(d));
    }
    match value.extract::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some(Duration::from_secs_f64(secs))),
        _ => Err(invalid(
            value.py(),
            "retention must be seconds (a non-negative number) or a datetime.timedelta",
        )),
    }
}

/// `hive.box.frame` as a frame reference (invalid names are `InvalidInputError`).
pub(crate) fn frame_ref(
    py: Python<'_>,
    hive: &str,
    r#box: &str,
    frame: &str,
) -> PyResult<FrameRef> {
    FrameRef::new(hive, r#box, frame)
        .map_err(|e| crate::errors::to_py_err(py, &apiary::ApiaryError::from(e)))
}

/// `partition_by` as column names: one name (`"country"`) or a sequence of them.
pub(crate) fn partition_columns(
    py: Python<'_>,
    given: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<String>> {
    let Some(given) = given else {
        return Ok(Vec::new());
    };
    if let Ok(one) = given.extract::<String>() {
        return Ok(vec![one]);
    }
    given.extract::<Vec<String>>().map_err(|_| {
        invalid(
            py,
            "partition_by takes a column name or a list of column names, e.g. \"country\" or \
             [\"country\", \"day\"]",
        )
    })
}
