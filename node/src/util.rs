//! Small functions every part of the node uses: the clock in
//! milliseconds, RFC 3339 dates, random identifiers.

use rand::RngCore;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `ms` since the epoch as an RFC 3339 date, to the second.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// `bytes` random bytes as lowercase hex: ids and secrets.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A lifetime as Quay writes it (`quay.expires-after`, the time machine
/// options): an integer and a unit, `s`, `m`, `h`, `d`, `w` or `y`; in
/// seconds. `None` for anything else, or what does not fit.
pub fn parse_lifetime_s(text: &str) -> Option<u64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 24 * 3600,
        'w' => 7 * 24 * 3600,
        'y' => 365 * 24 * 3600,
        _ => return None,
    };
    n.checked_mul(per)
}
