//! The OTLP messages the checker understands (opentelemetry-proto 1.x), field by field. A field
//! missing here (including newer ones such as `entity_refs` or `key_strindex`) makes the checker
//! decline the request: it proves only what it fully knows.

/// OTLP message types.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum M {
    TraceReq,
    LogsReq,
    MetricsReq,
    ResourceSpans,
    ResourceLogs,
    ResourceMetrics,
    Resource,
    ScopeSpans,
    ScopeLogs,
    ScopeMetrics,
    Scope,
    Span,
    Event,
    Link,
    Status,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
    NumberDp,
    HistogramDp,
    ExpHistogramDp,
    Buckets,
    SummaryDp,
    Quantile,
    Exemplar,
}

/// How a field is encoded, and what value upb would write back for it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum K {
    /// int64 / uint64: any varint round-trips.
    U64,
    /// int32 / enum: upb keeps 32 bits and writes them sign-extended.
    I32,
    /// uint32 / sint32 (zigzag): upb keeps 32 bits.
    U32,
    Bool,
    /// fixed64, sfixed64, double.
    F64,
    /// fixed32.
    F32,
    Str,
    Bytes,
    Msg(M),
    /// Packed repeated uint64.
    PackedVarint,
    /// Packed repeated fixed64 / double.
    PackedF64,
}

/// One field: number, kind and flags.
pub struct F {
    pub num: u32,
    pub k: K,
    pub flags: u8,
}

pub const REP: u8 = 1;
/// Explicit presence (oneof member or proto3 `optional`): written even when zero.
pub const PRES: u8 = 2;
/// Member of the message's (single) oneof.
pub const ONEOF: u8 = 4;

const fn f(num: u32, k: K, flags: u8) -> F {
    F { num, k, flags }
}

use K::*;

const TRACE_REQ: &[F] = &[f(1, Msg(M::ResourceSpans), REP)];
const LOGS_REQ: &[F] = &[f(1, Msg(M::ResourceLogs), REP)];
const METRICS_REQ: &[F] = &[f(1, Msg(M::ResourceMetrics), REP)];
const RESOURCE_SPANS: &[F] = &[
    f(1, Msg(M::Resource), 0),
    f(2, Msg(M::ScopeSpans), REP),
    f(3, Str, 0),
];
const RESOURCE_LOGS: &[F] = &[
    f(1, Msg(M::Resource), 0),
    f(2, Msg(M::ScopeLogs), REP),
    f(3, Str, 0),
];
const RESOURCE_METRICS: &[F] = &[
    f(1, Msg(M::Resource), 0),
    f(2, Msg(M::ScopeMetrics), REP),
    f(3, Str, 0),
];
const RESOURCE: &[F] = &[f(1, Msg(M::KeyValue), REP), f(2, U32, 0)];
const SCOPE_SPANS: &[F] = &[
    f(1, Msg(M::Scope), 0),
    f(2, Msg(M::Span), REP),
    f(3, Str, 0),
];
const SCOPE_LOGS: &[F] = &[
    f(1, Msg(M::Scope), 0),
    f(2, Msg(M::LogRecord), REP),
    f(3, Str, 0),
];
const SCOPE_METRICS: &[F] = &[
    f(1, Msg(M::Scope), 0),
    f(2, Msg(M::Metric), REP),
    f(3, Str, 0),
];
const SCOPE: &[F] = &[
    f(1, Str, 0),
    f(2, Str, 0),
    f(3, Msg(M::KeyValue), REP),
    f(4, U32, 0),
];
const SPAN: &[F] = &[
    f(1, Bytes, 0),
    f(2, Bytes, 0),
    f(3, Str, 0),
    f(4, Bytes, 0),
    f(5, Str, 0),
    f(6, I32, 0),
    f(7, F64, 0),
    f(8, F64, 0),
    f(9, Msg(M::KeyValue), REP),
    f(10, U32, 0),
    f(11, Msg(M::Event), REP),
    f(12, U32, 0),
    f(13, Msg(M::Link), REP),
    f(14, U32, 0),
    f(15, Msg(M::Status), 0),
    f(16, F32, 0),
];
const EVENT: &[F] = &[
    f(1, F64, 0),
    f(2, Str, 0),
    f(3, Msg(M::KeyValue), REP),
    f(4, U32, 0),
];
const LINK: &[F] = &[
    f(1, Bytes, 0),
    f(2, Bytes, 0),
    f(3, Str, 0),
    f(4, Msg(M::KeyValue), REP),
    f(5, U32, 0),
    f(6, F32, 0),
];
const STATUS: &[F] = &[f(2, Str, 0), f(3, I32, 0)];
const LOG_RECORD: &[F] = &[
    f(1, F64, 0),
    f(2, I32, 0),
    f(3, Str, 0),
    f(5, Msg(M::AnyValue), 0),
    f(6, Msg(M::KeyValue), REP),
    f(7, U32, 0),
    f(8, F32, 0),
    f(9, Bytes, 0),
    f(10, Bytes, 0),
    f(11, F64, 0),
    f(12, Str, 0),
];
const KEY_VALUE: &[F] = &[f(1, Str, 0), f(2, Msg(M::AnyValue), 0)];
const ANY_VALUE: &[F] = &[
    f(1, Str, PRES | ONEOF),
    f(2, Bool, PRES | ONEOF),
    f(3, U64, PRES | ONEOF),
    f(4, F64, PRES | ONEOF),
    f(5, Msg(M::ArrayValue), PRES | ONEOF),
    f(6, Msg(M::KvList), PRES | ONEOF),
    f(7, Bytes, PRES | ONEOF),
];
const ARRAY_VALUE: &[F] = &[f(1, Msg(M::AnyValue), REP)];
const KV_LIST: &[F] = &[f(1, Msg(M::KeyValue), REP)];
const METRIC: &[F] = &[
    f(1, Str, 0),
    f(2, Str, 0),
    f(3, Str, 0),
    f(5, Msg(M::Gauge), PRES | ONEOF),
    f(7, Msg(M::Sum), PRES | ONEOF),
    f(9, Msg(M::Histogram), PRES | ONEOF),
    f(10, Msg(M::ExpHistogram), PRES | ONEOF),
    f(11, Msg(M::Summary), PRES | ONEOF),
    f(12, Msg(M::KeyValue), REP),
];
const GAUGE: &[F] = &[f(1, Msg(M::NumberDp), REP)];
const SUM: &[F] = &[f(1, Msg(M::NumberDp), REP), f(2, I32, 0), f(3, Bool, 0)];
const HISTOGRAM: &[F] = &[f(1, Msg(M::HistogramDp), REP), f(2, I32, 0)];
const EXP_HISTOGRAM: &[F] = &[f(1, Msg(M::ExpHistogramDp), REP), f(2, I32, 0)];
const SUMMARY: &[F] = &[f(1, Msg(M::SummaryDp), REP)];
const NUMBER_DP: &[F] = &[
    f(2, F64, 0),
    f(3, F64, 0),
    f(4, F64, PRES | ONEOF),
    f(5, Msg(M::Exemplar), REP),
    f(6, F64, PRES | ONEOF),
    f(7, Msg(M::KeyValue), REP),
    f(8, U32, 0),
];
const HISTOGRAM_DP: &[F] = &[
    f(2, F64, 0),
    f(3, F64, 0),
    f(4, F64, 0),
    f(5, F64, PRES),
    f(6, PackedF64, REP),
    f(7, PackedF64, REP),
    f(8, Msg(M::Exemplar), REP),
    f(9, Msg(M::KeyValue), REP),
    f(10, U32, 0),
    f(11, F64, PRES),
    f(12, F64, PRES),
];
const EXP_HISTOGRAM_DP: &[F] = &[
    f(1, Msg(M::KeyValue), REP),
    f(2, F64, 0),
    f(3, F64, 0),
    f(4, F64, 0),
    f(5, F64, PRES),
    f(6, U32, 0),
    f(7, F64, 0),
    f(8, Msg(M::Buckets), 0),
    f(9, Msg(M::Buckets), 0),
    f(10, U32, 0),
    f(11, Msg(M::Exemplar), REP),
    f(12, F64, PRES),
    f(13, F64, PRES),
    f(14, F64, 0),
];
const BUCKETS: &[F] = &[f(1, U32, 0), f(2, PackedVarint, REP)];
const SUMMARY_DP: &[F] = &[
    f(2, F64, 0),
    f(3, F64, 0),
    f(4, F64, 0),
    f(5, F64, 0),
    f(6, Msg(M::Quantile), REP),
    f(7, Msg(M::KeyValue), REP),
    f(8, U32, 0),
];
const QUANTILE: &[F] = &[f(1, F64, 0), f(2, F64, 0)];
const EXEMPLAR: &[F] = &[
    f(2, F64, 0),
    f(3, F64, PRES | ONEOF),
    f(4, Bytes, 0),
    f(5, Bytes, 0),
    f(6, F64, PRES | ONEOF),
    f(7, Msg(M::KeyValue), REP),
];

/// The fields of `m`, in field-number order (the order upb writes them in).
pub fn fields(m: M) -> &'static [F] {
    match m {
        M::TraceReq => TRACE_REQ,
        M::LogsReq => LOGS_REQ,
        M::MetricsReq => METRICS_REQ,
        M::ResourceSpans => RESOURCE_SPANS,
        M::ResourceLogs => RESOURCE_LOGS,
        M::ResourceMetrics => RESOURCE_METRICS,
        M::Resource => RESOURCE,
        M::ScopeSpans => SCOPE_SPANS,
        M::ScopeLogs => SCOPE_LOGS,
        M::ScopeMetrics => SCOPE_METRICS,
        M::Scope => SCOPE,
        M::Span => SPAN,
        M::Event => EVENT,
        M::Link => LINK,
        M::Status => STATUS,
        M::LogRecord => LOG_RECORD,
        M::KeyValue => KEY_VALUE,
        M::AnyValue => ANY_VALUE,
        M::ArrayValue => ARRAY_VALUE,
        M::KvList => KV_LIST,
        M::Metric => METRIC,
        M::Gauge => GAUGE,
        M::Sum => SUM,
        M::Histogram => HISTOGRAM,
        M::ExpHistogram => EXP_HISTOGRAM,
        M::Summary => SUMMARY,
        M::NumberDp => NUMBER_DP,
        M::HistogramDp => HISTOGRAM_DP,
        M::ExpHistogramDp => EXP_HISTOGRAM_DP,
        M::Buckets => BUCKETS,
        M::SummaryDp => SUMMARY_DP,
        M::Quantile => QUANTILE,
        M::Exemplar => EXEMPLAR,
    }
}

/// The field numbered `num` in `spec` and its index (< 32: a bit in a mask), if there is one.
/// `hint`: where to look first (fields usually arrive in order, so the one after the last).
pub fn lookup(spec: &'static [F], num: u64, hint: usize) -> Option<(usize, &'static F)> {
    if let Some(f) = spec.get(hint) {
        if u64::from(f.num) == num {
            return Some((hint, f));
        }
    }
    spec.iter()
        .enumerate()
        .find(|(_, f)| u64::from(f.num) == num)
}
