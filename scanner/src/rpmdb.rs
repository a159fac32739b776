//! The rpm database: rpm 4.16+'s sqlite backend (`rpmdb.sqlite`, the
//! default of Fedora 33+, RHEL/Rocky/AlmaLinux 9, openSUSE), whose
//! `Packages` table holds one header blob per installed package.
//!
//! A header blob (rpm's "header" without the lead and magic, as
//! `headerExport` writes it) is: the entry count `il` and data length
//! `dl` as big-endian u32, then `il` index entries of 16 bytes (tag,
//! type, offset into the data, count; all big-endian), then `dl` bytes
//! of data. We read the few tags a scanner needs; every offset and count
//! is checked against the blob, so a hostile database is an error, not a
//! panic or an unbounded allocation.
//!
//! BerkeleyDB (`Packages`) and ndb (`Packages.db`) databases are not
//! read: the indexer reports them as unsupported rather than silently
//! finding nothing.

use crate::{Error, Result};
use std::path::Path;
use std::time::Instant;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// The most index entries one header may declare; real headers have a
/// few hundred (a package with many files, a few thousand at most).
const MAX_ENTRIES: u32 = 1 << 20;

/// The tags of one installed package that name and version it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    /// `SOURCERPM`, e.g. `openssl-3.0.7-24.el9.src.rpm`; absent for
    /// `gpg-pubkey` pseudo-packages.
    pub source_rpm: Option<String>,
}

fn be32(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).ok_or_else(|| corrupt("header ends inside a field"))?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn corrupt(why: &str) -> Error {
    Error::Corrupt(format!("rpm header: {why}"))
}

/// Parses one header blob from the `Packages` table.
pub fn parse_header(blob: &[u8]) -> Result<Header> {
    let il = be32(blob, 0)?;
    let dl = be32(blob, 4)? as usize;
    if il == 0 || il > MAX_ENTRIES {
        return Err(corrupt(&format!("{il} index entries")));
    }
    let data_at = 8 + il as usize * 16;
    let data = blob.get(data_at..data_at.checked_add(dl).ok_or_else(|| corrupt("data length overflows"))?).ok_or_else(|| corrupt("data runs past the blob"))?;
    let mut h = Header::default();
    for n in 0..il as usize {
        let e = 8 + n * 16;
        let (tag, ty, off, count) = (be32(blob, e)?, be32(blob, e + 4)?, be32(blob, e + 8)? as usize, be32(blob, e + 12)?);
        let string = || -> Result<String> {
            if ty != TYPE_STRING && ty != TYPE_I18NSTRING {
                return Err(corrupt(&format!("tag {tag} has type {ty}, not a string")));
            }
            let rest = data.get(off..).ok_or_else(|| corrupt("string offset past the data"))?;
            let end = rest.iter().position(|&c| c == 0).ok_or_else(|| corrupt("unterminated string"))?;
            Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
        };
        match tag {
            TAG_NAME => h.name = string()?,
            TAG_VERSION => h.version = string()?,
            TAG_RELEASE => h.release = string()?,
            TAG_SOURCERPM => h.source_rpm = Some(string()?),
            TAG_EPOCH => {
                if ty != TYPE_INT32 || count != 1 || off % 4 != 0 {
                    return Err(corrupt("EPOCH is not one aligned int32"));
                }
                h.epoch = Some(be32(data, off)?);
            }
            _ => {}
        }
    }
    if h.name.is_empty() || h.version.is_empty() {
        return Err(corrupt("a package without NAME or VERSION"));
    }
    Ok(h)
}

impl Header {
    /// `[epoch:]version-release`, the form rpm's ordering and the OSV
    /// rpm ecosystems use.
    pub fn evr(&self) -> String {
        let vr = if self.release.is_empty() { self.version.clone() } else { format!("{}-{}", self.version, self.release) };
        match self.epoch {
            Some(e) => format!("{e}:{vr}"),
            None => vr,
        }
    }

    /// The source package's name, from `name-version-release.src.rpm`.
    pub fn source_name(&self) -> Option<String> {
        let stem = self.source_rpm.as_deref()?.strip_suffix(".rpm")?;
        let stem = stem.rsplit_once('.').map(|(s, _arch)| s)?;
        let (nv, _release) = stem.rsplit_once('-')?;
        let (name, _version) = nv.rsplit_once('-')?;
        Some(name.to_string())
    }
}

/// Reads the installed packages' headers from an `rpmdb.sqlite` file. The file is
/// untrusted: opened read-only and immutable (no journal or WAL written
/// beside it), with sqlite's defensive mode on and untrusted schemas
/// refused; `deadline` and `max_rows` bound the work.
pub fn read_sqlite(path: &Path, deadline: Instant, max_rows: u64) -> Result<Vec<Header>> {
    use rusqlite::{Connection, OpenFlags};
    let uri = format!("file:{}?immutable=1", path.display());
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let sql = |e: rusqlite::Error| Error::Corrupt(format!("rpmdb.sqlite: {e}"));
    let db = Connection::open_with_flags(uri, flags).map_err(sql)?;
    db.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true).map_err(sql)?;
    db.pragma_update(None, "trusted_schema", false).map_err(sql)?;
    db.progress_handler(10_000, Some(move || Instant::now() > deadline));
    let mut stmt = db.prepare("SELECT blob FROM Packages").map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    let mut out = Vec::new();
    let mut seen = 0u64;
    while let Some(row) = rows.next().map_err(sql)? {
        seen += 1;
        if seen > max_rows {
            return Err(Error::Refused(format!("rpmdb.sqlite has more than {max_rows} packages")));
        }
        let blob = row.get_ref(0).map_err(sql)?.as_blob().map_err(|e| Error::Corrupt(format!("rpmdb.sqlite: {e}")))?;
        let h = parse_header(blob)?;
        // Imported signing keys are recorded as packages named
        // gpg-pubkey; they are not software.
        if h.name == "gpg-pubkey" {
            continue;
        }
        out.push(h);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header blob as rpm lays it out, from (tag, type, data) entries.
    fn blob(entries: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, bytes) in entries {
            while *ty == TYPE_INT32 && data.len() % 4 != 0 {
                data.push(0);
            }
            for v in [*tag, *ty, data.len() as u32, 1] {
                index.extend_from_slice(&v.to_be_bytes());
            }
            data.extend_from_slice(bytes);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(data);
        out
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    #[test]
    fn header_fields_and_source_name() {
        let b = blob(&[
            (TAG_NAME, TYPE_STRING, s("openssl-libs")),
            (TAG_VERSION, TYPE_STRING, s("3.0.7")),
            (TAG_RELEASE, TYPE_STRING, s("24.el9")),
            (TAG_EPOCH, TYPE_INT32, 1u32.to_be_bytes().to_vec()),
            (TAG_SOURCERPM, TYPE_STRING, s("openssl-3.0.7-24.el9.src.rpm")),
        ]);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.evr(), "1:3.0.7-24.el9");
        assert_eq!(h.source_name().as_deref(), Some("openssl"));
    }

    #[test]
    fn hostile_headers_are_errors() {
        let good = blob(&[(TAG_NAME, TYPE_STRING, s("a")), (TAG_VERSION, TYPE_STRING, s("1"))]);
        // Every truncation of a good header, and a few lies in its fields.
        for n in 0..good.len() {
            assert!(parse_header(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_header(&huge).is_err());
        let mut past = good.clone();
        past[16..20].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert!(parse_header(&past).is_err());
        let unterminated = blob(&[(TAG_NAME, TYPE_STRING, b"abc".to_vec())]);
        assert!(parse_header(&unterminated).is_err());
        let epoch_as_string = blob(&[(TAG_NAME, TYPE_STRING, s("a")), (TAG_VERSION, TYPE_STRING, s("1")), (TAG_EPOCH, TYPE_STRING, s("1"))]);
        assert!(parse_header(&epoch_as_string).is_err());
    }
}
