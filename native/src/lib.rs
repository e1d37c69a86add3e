//! errorgate_native: proves OTLP export requests valid from their protobuf bytes (see
//! errorgate/intake/proof.py for the contract) and finds redact's item signatures in them
//! (errorgate/processors/redaction/signatures.py). No unsafe code; every read is bounds-checked.
#![forbid(unsafe_code)]

mod otlp;
mod schema;
mod signatures;
mod wire;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// prove(signal, data, max_attribute_depth, max_string_length, max_attributes)
/// -> (items, canonical) | None. signal: 0 traces, 1 logs, 2 metrics.
#[pyfunction]
fn prove(
    py: Python<'_>,
    signal: u8,
    data: &[u8],
    max_attribute_depth: u64,
    max_string_length: u64,
    max_attributes: u64,
) -> PyResult<Option<(u64, bool)>> {
    let signal = match signal {
        0 => otlp::Signal::Traces,
        1 => otlp::Signal::Logs,
        2 => otlp::Signal::Metrics,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "signal must be 0, 1 or 2",
            ))
        }
    };
    let lim = otlp::Limits {
        max_depth: max_attribute_depth,
        max_len: max_string_length,
        max_attrs: max_attributes,
    };
    // The bytes object is immutable, so other Python threads may run while it is read.
    let proof = py.allow_threads(|| otlp::prove(signal, data, lim));
    Ok(proof.ok().map(|p| (p.items, p.canonical)))
}

/// item_signatures(signal, data) -> [bytes | None, ...] | None. signal: 0 traces, 1 logs,
/// 2 metrics (no item signatures: None). Per span or log record in order of occurrence, its
/// bytes without ids and times, or None where the Python signature must be computed (a span
/// with events or links); None for the whole request when the bytes do not frame as one.
#[pyfunction]
fn item_signatures<'py>(
    py: Python<'py>,
    signal: u8,
    data: &[u8],
) -> PyResult<Option<Vec<Option<Bound<'py, PyBytes>>>>> {
    let logs = match signal {
        0 => false,
        1 => true,
        2 => return Ok(None),
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "signal must be 0, 1 or 2",
            ))
        }
    };
    // The walk needs no Python objects; only making the bytes objects does.
    let Ok(found) = py.allow_threads(|| signatures::item_signatures(data, logs)) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(found.len());
    for parts in found {
        let Some(parts) = parts else {
            out.push(None);
            continue;
        };
        let len = parts.iter().map(|(a, b)| b - a).sum();
        let bytes = PyBytes::new_with(py, len, |buf| {
            let mut at = 0;
            for &(a, b) in &parts {
                buf[at..at + b - a].copy_from_slice(&data[a..b]);
                at += b - a;
            }
            Ok(())
        })?;
        out.push(Some(bytes));
    }
    Ok(Some(out))
}

#[pymodule]
fn errorgate_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(prove, m)?)?;
    m.add_function(wrap_pyfunction!(item_signatures, m)?)?;
    Ok(())
}
