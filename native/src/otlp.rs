//! The checker: one pass over an OTLP export request's protobuf bytes that proves what
//! errorgate's `validate_request` would find (nothing to reject) and whether upb would write
//! the same bytes back. Anything it does not fully understand makes it decline (`Err(Decline)`):
//! declining is always safe, the caller then decodes and validates in Python.

use crate::schema::{fields, lookup, K, M, ONEOF, PRES, REP};
use crate::wire::Reader;

/// Not proven (unknown, unusual, invalid or rejectable content).
#[derive(Debug)]
pub struct Decline;

type Res<T> = Result<T, Decline>;

/// `ValidationConfig`'s limits.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_depth: u64,
    pub max_len: u64,
    pub max_attrs: u64,
}

/// What a proven request is: its item count (spans, log records or metric data points) and
/// whether serializing its decoded form gives back exactly its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Proof {
    pub items: u64,
    pub canonical: bool,
}

/// Message nesting the checker follows. upb refuses deeper than 100; the deepest usual OTLP
/// message is 9 levels down, and each attribute nesting level adds two.
const MAX_MESSAGE_DEPTH: u32 = 64;

#[derive(Clone, Copy)]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

pub fn prove(signal: Signal, data: &[u8], lim: Limits) -> Res<Proof> {
    let root = match signal {
        Signal::Traces => M::TraceReq,
        Signal::Logs => M::LogsReq,
        Signal::Metrics => M::MetricsReq,
    };
    let mut cx = Cx {
        lim,
        items: 0,
        canonical: true,
    };
    let facts = walk(root, data, &mut cx, 1, 0)?;
    // Bytes without a single resource entry decode to an empty request: not a provable export.
    if facts.children == 0 {
        return Err(Decline);
    }
    Ok(Proof {
        items: cx.items,
        canonical: cx.canonical,
    })
}

struct Cx {
    lim: Limits,
    items: u64,
    canonical: bool,
}

/// What one message's fields say, for the checks made when the message ends.
#[derive(Default)]
struct Facts<'a> {
    ids: [&'a [u8]; 3],
    start: u64,
    end: u64,
    /// KeyValue entries (attributes) directly in the message.
    kvs: u64,
    /// Sub-messages directly in the message.
    children: u64,
    named: bool,
    has_data: bool,
}

/// Walk one message of type `m`. `depth`: message nesting (root = 1); `ad`: the attribute
/// nesting level of `m` when it is an attribute value (1 = an attribute's value), as
/// `Limits.value` counts it in validation.py.
fn walk<'a>(m: M, buf: &'a [u8], cx: &mut Cx, depth: u32, ad: u64) -> Res<Facts<'a>> {
    if depth > MAX_MESSAGE_DEPTH {
        return Err(Decline);
    }
    let mut r = Reader::new(buf);
    let mut facts = Facts::default();
    let spec = fields(m);
    let (mut last, mut seen, mut oneof, mut hint) = (0u64, 0u64, false, 0usize);
    while !r.at_end() {
        let tag = r.varint32().ok_or(Decline)?;
        let (num, wire_type) = (tag.value >> 3, tag.value & 7);
        // Unknown field numbers (0 and out-of-range ones included) are declined.
        let (idx, field) = lookup(spec, num, hint).ok_or(Decline)?;
        // A repeated field's next entry, or the next field: both are where the next tag usually is.
        hint = if field.flags & REP != 0 { idx } else { idx + 1 };
        let bit = 1u64 << idx;
        if seen & bit != 0 {
            // A singular field twice is merged or replaced by decoding: decline rather than model it.
            if field.flags & REP == 0 {
                return Err(Decline);
            }
            // upb writes a repeated field's entries together, a packed field as one record.
            if num != last || matches!(field.k, K::PackedVarint | K::PackedF64) {
                cx.canonical = false;
            }
        } else if field.flags & ONEOF != 0 {
            // A second member of the oneof replaces the first: decline.
            if oneof {
                return Err(Decline);
            }
            oneof = true;
        }
        if !tag.shortest || num < last {
            cx.canonical = false;
        }
        seen |= bit;
        last = num;
        let implicit = field.flags & (PRES | REP) == 0;
        match (field.k, wire_type) {
            (K::U64 | K::I32 | K::U32 | K::Bool, 0) => {
                let v = r.varint().ok_or(Decline)?;
                let round_trips = match field.k {
                    K::I32 => v.value == (v.value as u32 as i32 as i64 as u64),
                    K::U32 => v.value <= u64::from(u32::MAX),
                    K::Bool => v.value <= 1,
                    _ => true,
                };
                if !v.shortest || !round_trips || (implicit && v.value == 0) {
                    cx.canonical = false;
                }
            }
            (K::F64, 1) => {
                let v = r.fixed64().ok_or(Decline)?;
                if implicit && v == 0 {
                    cx.canonical = false;
                }
                if m == M::Span && num == 7 {
                    facts.start = v;
                } else if m == M::Span && num == 8 {
                    facts.end = v;
                }
            }
            (K::F32, 5) => {
                let v = r.fixed32().ok_or(Decline)?;
                if implicit && v == 0 {
                    cx.canonical = false;
                }
            }
            (_, 2) => {
                let len = r.varint32().ok_or(Decline)?;
                if !len.shortest {
                    cx.canonical = false;
                }
                let bytes = r
                    .take(usize::try_from(len.value).map_err(|_| Decline)?)
                    .ok_or(Decline)?;
                if implicit && bytes.is_empty() && !matches!(field.k, K::Msg(_)) {
                    cx.canonical = false;
                }
                length_delimited(m, num, field.k, bytes, cx, depth, ad, &mut facts)?;
            }
            // Wrong wire type for the field (upb keeps it as an unknown field) or a group.
            _ => return Err(Decline),
        }
    }
    finish(m, &facts, cx, ad)?;
    Ok(facts)
}

#[allow(clippy::too_many_arguments)]
fn length_delimited<'a>(
    m: M,
    num: u64,
    k: K,
    bytes: &'a [u8],
    cx: &mut Cx,
    depth: u32,
    ad: u64,
    facts: &mut Facts<'a>,
) -> Res<()> {
    match k {
        K::Str => {
            // upb refuses a proto3 string that is not UTF-8.
            if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
                return Err(Decline);
            }
            let limited = (m == M::AnyValue || m == M::KeyValue) && num == 1;
            if limited && bytes.len() as u64 > cx.lim.max_len {
                return Err(Decline);
            }
            if m == M::Metric && num == 1 {
                facts.named = !bytes.is_empty();
            }
        }
        K::Bytes => {
            if m == M::AnyValue && bytes.len() as u64 > cx.lim.max_len {
                return Err(Decline);
            }
            let slot = match (m, num) {
                (M::Span | M::Link, 1) | (M::LogRecord, 9) => Some(0),
                (M::Span | M::Link, 2) | (M::LogRecord, 10) => Some(1),
                (M::Span, 4) => Some(2),
                _ => None,
            };
            if let Some(slot) = slot {
                facts.ids[slot] = bytes;
            }
        }
        K::Msg(child) => {
            walk(child, bytes, cx, depth + 1, child_level(m, child, ad))?;
            facts.children += 1;
            if child == M::KeyValue {
                facts.kvs += 1;
            }
            if m == M::Metric && child != M::KeyValue {
                facts.has_data = true;
            }
        }
        K::PackedVarint => {
            if bytes.is_empty() {
                cx.canonical = false;
            }
            let mut inner = Reader::new(bytes);
            while !inner.at_end() {
                if !inner.varint().ok_or(Decline)?.shortest {
                    cx.canonical = false;
                }
            }
        }
        K::PackedF64 => {
            if bytes.len() & 7 != 0 {
                return Err(Decline);
            }
            if bytes.is_empty() {
                cx.canonical = false;
            }
        }
        // Scalars never arrive here (their wire types differ).
        _ => return Err(Decline),
    }
    Ok(())
}

/// The attribute nesting level of a `child` message inside `parent` (at level `ad`).
fn child_level(parent: M, child: M, ad: u64) -> u64 {
    match (parent, child) {
        // A key/value list's entries and an array's values are one level deeper.
        (M::KvList, M::KeyValue) | (M::ArrayValue, M::AnyValue) => ad + 1,
        // An attribute's value, and the list or array an AnyValue holds, stay at its level.
        (M::KeyValue, M::AnyValue) | (M::AnyValue, _) => ad,
        // Attributes of an item, resource, scope...; a log record's body.
        _ => 1,
    }
}

/// The checks made when a message ends: the same as validation.py's for what it checks.
fn finish(m: M, facts: &Facts, cx: &mut Cx, ad: u64) -> Res<()> {
    let lim = cx.lim;
    if facts.kvs > lim.max_attrs {
        return Err(Decline); // "more than N attributes" (any attribute list, key/value lists too)
    }
    let [tid, sid, pid] = facts.ids;
    let ok = match m {
        M::Span => {
            cx.items += 1;
            tid.len() == 16
                && tid.iter().any(|&b| b != 0)
                && sid.len() == 8
                && sid.iter().any(|&b| b != 0)
                && (pid.is_empty() || pid.len() == 8)
                && facts.end >= facts.start
        }
        M::Link => tid.len() == 16 && sid.len() == 8,
        M::LogRecord => {
            cx.items += 1;
            (tid.is_empty() || tid.len() == 16) && (sid.is_empty() || sid.len() == 8)
        }
        M::NumberDp | M::HistogramDp | M::ExpHistogramDp | M::SummaryDp => {
            cx.items += 1;
            true
        }
        M::Metric => facts.named && facts.has_data,
        // "attribute nesting deeper than N": a non-empty array or list at the deepest level.
        M::ArrayValue | M::KvList => ad < lim.max_depth || facts.children == 0,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Decline)
    }
}
