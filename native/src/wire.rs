//! A bounds-checked reader of the protobuf wire format: varints, fixed-width values and
//! length-delimited slices. Every read either stays inside the buffer or returns `None`.

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A varint's value and whether it was written in its shortest form (upb writes only that).
pub struct Varint {
    pub value: u64,
    pub shortest: bool,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// At most 10 bytes; a 10th byte above 1 overflows 64 bits, which upb rejects.
    #[inline]
    pub fn varint(&mut self) -> Option<Varint> {
        // Most tags, lengths and small values are one byte.
        let first = *self.buf.get(self.pos)?;
        if first < 0x80 {
            self.pos += 1;
            return Some(Varint {
                value: u64::from(first),
                shortest: true,
            });
        }
        self.long_varint()
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Option<Varint> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                // A last byte of zero (after the first) means the value fitted in fewer bytes.
                return Some(Varint {
                    value,
                    shortest: i == 0 || byte != 0,
                });
            }
        }
        None
    }

    /// A tag or a length: upb reads at most 5 bytes for those and refuses longer encodings,
    /// even of small values.
    pub fn varint32(&mut self) -> Option<Varint> {
        let start = self.pos;
        let v = self.varint()?;
        if self.pos - start > 5 || v.value > u64::from(u32::MAX) {
            return None;
        }
        Some(v)
    }

    pub fn fixed64(&mut self) -> Option<u64> {
        let bytes = self.take(8)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(bytes);
        Some(u64::from_le_bytes(le))
    }

    pub fn fixed32(&mut self) -> Option<u32> {
        let bytes = self.take(4)?;
        let mut le = [0u8; 4];
        le.copy_from_slice(bytes);
        Some(u32::from_le_bytes(le))
    }

    pub fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let v = Reader::new(&[0x96, 0x01]).varint().unwrap();
        assert_eq!((v.value, v.shortest), (150, true));
        let v = Reader::new(&[0x80, 0x00]).varint().unwrap();
        assert_eq!((v.value, v.shortest), (0, false));
        assert!(Reader::new(&[0x80]).varint().is_none());
        assert!(Reader::new(&[0xff; 10]).varint().is_none());
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max).varint().unwrap().value, u64::MAX);
        assert_eq!(
            Reader::new(&[0x81, 0x80, 0x80, 0x80, 0x00])
                .varint32()
                .unwrap()
                .value,
            1
        );
        assert!(Reader::new(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x00])
            .varint32()
            .is_none());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x7f])
            .varint32()
            .is_none());
    }

    #[test]
    fn take_stays_inside() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(r.take(4).is_none());
        assert_eq!(r.take(usize::MAX).map(|s| s.len()), None);
        assert_eq!(r.take(3).unwrap(), &[1, 2, 3]);
        assert!(r.at_end());
    }
}
