//! errorgate_native: proves OTLP export requests valid from their protobuf bytes (see
//! errorgate/intake/proof.py for the contract). No unsafe code; every read is bounds-checked.
#![forbid(unsafe_code)]

mod otlp;
mod schema;
mod wire;

use pyo3::prelude::*;

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

#[pymodule]
fn errorgate_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(prove, m)?)?;
    Ok(())
}
