//! The bytes of a metadata snapshot, written and read one record at a time.
//!
//! A snapshot is every record of the `state` column family. It is built
//! into a file and installed from one, streaming, so a node never holds a
//! second copy of its whole state in memory to build or send one (it did:
//! the records, their encoding and the stored copy, every 10,000 entries).
//!
//! The layout is the one nodes have always exchanged — a version byte, then
//! the bincode (standard configuration) encoding of a list of (key, value)
//! byte strings — so nodes of the previous release install what this one
//! sends and the other way round:
//!
//! ```text
//! version u8 | count varint | (key_len varint | key | value_len varint | value) * count
//! ```
//!
//! A varint is bincode's: below 251 one byte; else a marker (251, 252, 253)
//! and the value as a little-endian u16, u32 or u64.

use std::io::{self, Read, Write};

/// The largest key or value a snapshot may hold (a bound on what a bad
/// snapshot can make a node allocate).
const MAX_FIELD: u64 = berth_common::codec::MAX_RECORD_BYTES as u64;

fn write_varint(w: &mut impl Write, v: u64) -> io::Result<()> {
    if v < 251 {
        w.write_all(&[v as u8])
    } else if let Ok(v) = u16::try_from(v) {
        w.write_all(&[251])?;
        w.write_all(&v.to_le_bytes())
    } else if let Ok(v) = u32::try_from(v) {
        w.write_all(&[252])?;
        w.write_all(&v.to_le_bytes())
    } else {
        w.write_all(&[253])?;
        w.write_all(&v.to_le_bytes())
    }
}

fn read_varint(r: &mut (impl Read + ?Sized)) -> io::Result<u64> {
    let mut first = [0u8; 1];
    r.read_exact(&mut first)?;
    let mut wide = |n: usize| -> io::Result<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b[..n])?;
        Ok(u64::from_le_bytes(b))
    };
    match first[0] {
        b @ 0..=250 => Ok(b as u64),
        251 => wide(2),
        252 => wide(4),
        253 => wide(8),
        b => Err(io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: integer marker {b} is not one this build reads"))),
    }
}

/// Starts a snapshot of `count` records.
pub(crate) fn write_header(w: &mut impl Write, version: u8, count: u64) -> io::Result<()> {
    w.write_all(&[version])?;
    write_varint(w, count)
}

/// One record of a snapshot.
pub(crate) fn write_record(w: &mut impl Write, key: &[u8], value: &[u8]) -> io::Result<()> {
    write_varint(w, key.len() as u64)?;
    w.write_all(key)?;
    write_varint(w, value.len() as u64)?;
    w.write_all(value)
}

/// Reads a whole snapshot of format `version`, handing each record to
/// `each` in order (an error from `each` stops the read and is returned);
/// refuses another version, a field over the size bound,
/// a short file and bytes after the last record.
pub(crate) fn read_records(r: &mut impl Read, version: u8, mut each: impl FnMut(Vec<u8>, Vec<u8>) -> io::Result<()>) -> io::Result<u64> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut v = [0u8; 1];
    r.read_exact(&mut v)?;
    if v[0] != version {
        return Err(bad(format!("snapshot format version {} is not known (this build reads {version})", v[0])));
    }
    let count = read_varint(r)?;
    let field = |r: &mut dyn Read| -> io::Result<Vec<u8>> {
        let len = read_varint(r)?;
        if len > MAX_FIELD {
            return Err(bad(format!("snapshot record field of {len} bytes is over the {MAX_FIELD}-byte limit")));
        }
        let mut buf = Vec::new();
        r.take(len).read_to_end(&mut buf)?;
        if buf.len() as u64 != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "snapshot ends inside a record"));
        }
        Ok(buf)
    };
    for _ in 0..count {
        let key = field(r)?;
        let value = field(r)?;
        each(key, value)?;
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest)? != 0 {
        return Err(bad(format!("snapshot has bytes after its {count} records")));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout the previous release encodes and decodes as a whole.
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct SnapshotBody {
        records: Vec<(Vec<u8>, Vec<u8>)>,
    }

    fn records() -> Vec<(Vec<u8>, Vec<u8>)> {
        // Lengths on both sides of each varint width.
        [0usize, 1, 250, 251, 252, 65_535, 65_536, 70_000]
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("k{i}").into_bytes().repeat(1 + n / 1000), (0..*n).map(|b| (b * 7 + i) as u8).collect()))
            .collect()
    }

    #[test]
    fn streamed_bytes_are_the_previous_release_s_encoding() {
        let records = records();
        let mut streamed = Vec::new();
        write_header(&mut streamed, 1, records.len() as u64).unwrap();
        for (k, v) in &records {
            write_record(&mut streamed, k, v).unwrap();
        }
        let whole = berth_common::encode_versioned(1, &SnapshotBody { records: records.clone() }).unwrap();
        assert!(streamed == whole, "byte for byte what the previous release sends");
        let mut back = Vec::new();
        assert_eq!(
            read_records(&mut streamed.as_slice(), 1, |k, v| {
                back.push((k, v));
                Ok(())
            })
            .unwrap(),
            records.len() as u64
        );
        assert_eq!(back, records);
        // A count past 250 uses the wide form too.
        let many: Vec<(Vec<u8>, Vec<u8>)> = (0..300u32).map(|i| (i.to_be_bytes().to_vec(), vec![1])).collect();
        let mut streamed = Vec::new();
        write_header(&mut streamed, 1, many.len() as u64).unwrap();
        for (k, v) in &many {
            write_record(&mut streamed, k, v).unwrap();
        }
        let decoded: SnapshotBody = berth_common::decode_versioned(1, &streamed).unwrap();
        assert_eq!(decoded.records, many);
    }

    #[test]
    fn bad_snapshots_are_refused() {
        let mut good = Vec::new();
        write_header(&mut good, 1, 2).unwrap();
        write_record(&mut good, b"a", b"1").unwrap();
        write_record(&mut good, b"b", b"2").unwrap();
        let read = |bytes: &[u8]| read_records(&mut &bytes[..], 1, |_, _| Ok(()));
        assert!(read(&good).is_ok());
        assert!(read(&good[..good.len() - 1]).is_err(), "cut short");
        let mut longer = good.clone();
        longer.push(0);
        assert!(read(&longer).is_err(), "trailing bytes");
        let mut other = good.clone();
        other[0] = 2;
        assert!(read(&other).is_err(), "another version");
        let mut huge = Vec::new();
        write_header(&mut huge, 1, 1).unwrap();
        write_varint(&mut huge, MAX_FIELD + 1).unwrap();
        assert!(read(&huge).is_err(), "a field over the bound is refused before any allocation");
    }
}
