//! Item signatures for redact's item memo (errorgate/processors/redaction/memo.py): each span's
//! or log record's own bytes inside an export request, with its ids and times left out, found
//! by one pass over the request's bytes instead of blanking, serializing and restoring every
//! item in Python.
//!
//! Soundness rests on decoding being a function of the bytes: the records left in a signature
//! decode to the item minus exactly the fields the Python signature blanks, so equal signatures
//! mean equal content. Only records of those fields with their declared wire type are left out;
//! anything else about them (another wire type, a group) gives no signature for the item, and
//! bytes that do not frame as an export request give none for the whole request.

use crate::wire::Reader;

/// A signature as the parts of the request's bytes it is made of (no copy until Python's).
pub type Parts = Vec<(usize, usize)>;

/// What an item needs: the fields its signature leaves out (number, wire type), and fields
/// whose presence means "the Python side computes this one" (a span's events and links, whose
/// own ids and times the Python signature blanks too).
struct ItemKind {
    strip: &'static [(u64, u64)],
    python_only: &'static [u64],
}

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// Span: trace_id 1, span_id 2, parent_span_id 4 (bytes); start 7, end 8 (fixed64).
const SPAN: ItemKind = ItemKind {
    strip: &[
        (1, WIRE_LEN),
        (2, WIRE_LEN),
        (4, WIRE_LEN),
        (7, WIRE_FIXED64),
        (8, WIRE_FIXED64),
    ],
    python_only: &[11, 13],
};

/// LogRecord: time 1 (fixed64), trace_id 9, span_id 10 (bytes), observed time 11 (fixed64).
const LOG_RECORD: ItemKind = ItemKind {
    strip: &[
        (1, WIRE_FIXED64),
        (9, WIRE_LEN),
        (10, WIRE_LEN),
        (11, WIRE_FIXED64),
    ],
    python_only: &[],
};

/// The bytes do not frame as an export request.
#[derive(Debug)]
pub struct Malformed;

type Res<T> = Result<T, Malformed>;

/// One record of a message: its field number and wire type, and where the whole record
/// (tag included) and its payload (for length-delimited ones) are.
struct Record {
    num: u64,
    wire_type: u64,
    start: usize,
    end: usize,
    payload: (usize, usize),
}

/// The records of the message in `buf[from..to]`, one at a time; offsets are into `buf`.
struct Records<'a> {
    reader: Reader<'a>,
    base: usize,
    len: usize,
}

impl<'a> Records<'a> {
    fn new(buf: &'a [u8], (from, to): (usize, usize)) -> Self {
        Records {
            reader: Reader::new(&buf[from..to]),
            base: from,
            len: to - from,
        }
    }

    fn pos(&self) -> usize {
        self.len - self.reader.remaining()
    }

    fn next(&mut self) -> Option<Res<Record>> {
        if self.reader.at_end() {
            return None;
        }
        Some(self.record())
    }

    fn record(&mut self) -> Res<Record> {
        let start = self.pos();
        let tag = self.reader.varint32().ok_or(Malformed)?.value;
        let (num, wire_type) = (tag >> 3, tag & 7);
        if num == 0 {
            return Err(Malformed); // upb refuses field number 0
        }
        let mut payload = (0, 0);
        match wire_type {
            WIRE_VARINT => {
                self.reader.varint().ok_or(Malformed)?;
            }
            WIRE_FIXED64 => {
                self.reader.take(8).ok_or(Malformed)?;
            }
            WIRE_LEN => {
                let len = self.reader.varint32().ok_or(Malformed)?.value;
                let from = self.pos();
                self.reader
                    .take(usize::try_from(len).map_err(|_| Malformed)?)
                    .ok_or(Malformed)?;
                payload = (self.base + from, self.base + self.pos());
            }
            WIRE_FIXED32 => {
                self.reader.take(4).ok_or(Malformed)?;
            }
            // Groups (3, 4) and the undefined wire types 6, 7: not modelled.
            _ => return Err(Malformed),
        }
        Ok(Record {
            num,
            wire_type,
            start: self.base + start,
            end: self.base + self.pos(),
            payload,
        })
    }
}

/// Signatures of every item of an ExportTraceServiceRequest (`logs` false) or
/// ExportLogsServiceRequest (`logs` true), in order of occurrence; `None` for an item the
/// Python side must compute. Resource entries are field 1 of the request, scope entries field
/// 2 of a resource entry, items field 2 of a scope entry (for both signals).
pub fn item_signatures(data: &[u8], logs: bool) -> Res<Vec<Option<Parts>>> {
    let kind = if logs { &LOG_RECORD } else { &SPAN };
    let mut out = Vec::new();
    for_each_entry(data, (0, data.len()), 1, |resource| {
        for_each_entry(data, resource, 2, |scope| {
            for_each_entry(data, scope, 2, |item| {
                out.push(item_parts(data, item, kind)?);
                Ok(())
            })
        })
    })?;
    Ok(out)
}

/// Call `each` with the payload of every field-`num` record of the message at `span`. Other
/// fields are skipped (they decode the same either way); field `num` with another wire type
/// would be an unknown field to upb, so no entry: declined rather than modelled.
fn for_each_entry(
    data: &[u8],
    span: (usize, usize),
    num: u64,
    mut each: impl FnMut((usize, usize)) -> Res<()>,
) -> Res<()> {
    let mut records = Records::new(data, span);
    while let Some(record) = records.next() {
        let record = record?;
        if record.num == num {
            if record.wire_type != WIRE_LEN {
                return Err(Malformed);
            }
            each(record.payload)?;
        }
    }
    Ok(())
}

/// The item's records minus those its signature leaves out, as ranges of `data` (adjacent
/// kept records merged into one range); `None` when the Python side computes it.
fn item_parts(data: &[u8], item: (usize, usize), kind: &ItemKind) -> Res<Option<Parts>> {
    let mut parts: Parts = Vec::new();
    let mut python = false;
    let mut records = Records::new(data, item);
    while let Some(record) = records.next() {
        let record = record?;
        if kind.python_only.contains(&record.num) {
            python = true; // still walked to the end: malformed bytes decline the whole request
            continue;
        }
        match kind.strip.iter().find(|(num, _)| *num == record.num) {
            Some(&(_, wire_type)) if wire_type == record.wire_type => continue,
            // Another wire type: upb keeps it as an unknown field, which the Python signature
            // keeps in another place. Correct either way, but only the Python one is byte-equal.
            Some(_) => python = true,
            None => match parts.last_mut() {
                Some(last) if last.1 == record.start => last.1 = record.end,
                _ => parts.push((record.start, record.end)),
            },
        }
    }
    Ok(if python { None } else { Some(parts) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(data: &[u8], parts: &Parts) -> Vec<u8> {
        parts
            .iter()
            .flat_map(|&(a, b)| data[a..b].iter().copied())
            .collect()
    }

    fn len_field(num: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(num << 3) | 2, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn request(items: &[Vec<u8>]) -> Vec<u8> {
        let mut scope = len_field(1, &len_field(1, b"tests"));
        for item in items {
            scope.extend(len_field(2, item));
        }
        len_field(1, &len_field(2, &scope))
    }

    #[test]
    fn spans_lose_ids_and_times() {
        let mut span = len_field(1, &[7; 16]);
        span.extend(len_field(2, &[8; 8]));
        span.extend(len_field(5, b"GET /"));
        span.push((7 << 3) | 1);
        span.extend([1; 8]);
        span.push(6 << 3);
        span.push(2);
        let data = request(&[span]);
        let sigs = item_signatures(&data, false).unwrap();
        assert_eq!(sigs.len(), 1);
        let mut want = len_field(5, b"GET /");
        want.extend([6 << 3, 2]);
        assert_eq!(join(&data, sigs[0].as_ref().unwrap()), want);
    }

    #[test]
    fn events_links_and_odd_wire_types_are_left_to_python() {
        let events = len_field(11, &len_field(2, b"e"));
        let odd_id = vec![1 << 3, 5]; // trace_id as a varint: an unknown field to upb
        let plain = len_field(5, b"x");
        let data = request(&[events, odd_id, plain.clone()]);
        let sigs = item_signatures(&data, false).unwrap();
        assert!(sigs[0].is_none() && sigs[1].is_none());
        assert_eq!(join(&data, sigs[2].as_ref().unwrap()), plain);
    }

    #[test]
    fn malformed_bytes_give_nothing() {
        let data = request(&[len_field(5, b"name")]);
        for cut in 0..data.len() {
            // Every proper prefix cuts a length-delimited record short.
            assert!(item_signatures(&data[..cut], false).is_err() || cut == 0);
        }
        assert!(item_signatures(&[(1 << 3) | 3], false).is_err()); // a group
        assert!(item_signatures(&[1 << 3, 1], true).is_err()); // resource entry as varint
        assert!(item_signatures(&[0x80; 11], true).is_err());
        assert_eq!(item_signatures(&[], true).unwrap().len(), 0);
    }
}
