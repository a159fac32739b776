//! Which keys of the applied state changed since a reader last looked.
//!
//! A background job that follows part of the metadata (the reconciler
//! following blob records) would otherwise re-read all of it on every
//! pass, which costs in proportion to the whole catalogue rather than to
//! what changed. A [`KeyWatch`] collects the keys under its prefixes that
//! the state machine wrote or deleted, as it applies them, so a pass reads
//! only those.
//!
//! A watch knows nothing of the values: the reader reads the current state
//! of each key it is handed, so a key changed twice is read once, at its
//! latest. When the watch cannot say which keys changed — it is new, a
//! snapshot replaced the whole state, or more keys changed than it keeps —
//! it answers [`Changed::All`] and the reader re-reads everything once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock, Weak};

/// Keys one watch keeps before it gives up naming them and answers
/// [`Changed::All`]: a bound on its memory when nobody reads it for long.
const MAX_PENDING: usize = 100_000;

/// What changed under a watch's prefixes since it was last taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    /// Anything may have changed: read everything again.
    All,
    /// Exactly these keys were written or deleted (possibly none).
    Keys(BTreeSet<Vec<u8>>),
}

/// Changed keys under some prefixes; see the module doc.
#[derive(Debug)]
pub struct KeyWatch {
    prefixes: Vec<Vec<u8>>,
    pending: Mutex<Pending>,
}

#[derive(Debug)]
struct Pending {
    keys: BTreeSet<Vec<u8>>,
    all: bool,
}

impl KeyWatch {
    /// The changes since the last call, and a fresh start for the next.
    pub fn take(&self) -> Changed {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keys = std::mem::take(&mut p.keys);
        if std::mem::replace(&mut p.all, false) {
            Changed::All
        } else {
            Changed::Keys(keys)
        }
    }

    fn note<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) {
        let mut ours = keys.filter(|k| self.prefixes.iter().any(|p| k.starts_with(p))).peekable();
        if ours.peek().is_none() {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.all {
            return;
        }
        p.keys.extend(ours.map(<[u8]>::to_vec));
        if p.keys.len() > MAX_PENDING {
            p.keys.clear();
            p.all = true;
        }
    }

    fn note_all(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.keys.clear();
        p.all = true;
    }
}

/// The watches of one state machine. Dropping a [`KeyWatch`] ends it.
#[derive(Clone, Default)]
pub(crate) struct Watches(Arc<RwLock<Vec<Weak<KeyWatch>>>>);

impl Watches {
    /// A watch on `prefixes`; its first [`KeyWatch::take`] answers
    /// [`Changed::All`], since nothing was read yet.
    pub(crate) fn watch(&self, prefixes: &[&[u8]]) -> Arc<KeyWatch> {
        let w =
            Arc::new(KeyWatch { prefixes: prefixes.iter().map(|p| p.to_vec()).collect(), pending: Mutex::new(Pending { keys: BTreeSet::new(), all: true }) });
        let mut all = self.0.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&w));
        w
    }

    /// The state machine wrote or deleted `keys` (after the write landed).
    pub(crate) fn changed<'a>(&self, keys: impl Iterator<Item = &'a [u8]> + Clone) {
        for w in self.0.read().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade) {
            w.note(keys.clone());
        }
    }

    /// The whole state was replaced (a snapshot was installed).
    pub(crate) fn replaced(&self) {
        for w in self.0.read().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade) {
            w.note_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ks: &[&str]) -> BTreeSet<Vec<u8>> {
        ks.iter().map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_watch_names_the_keys_under_its_prefixes_once_each() {
        let ws = Watches::default();
        let w = ws.watch(&[b"b", b"p"]);
        assert_eq!(w.take(), Changed::All, "a new watch has read nothing yet");
        assert_eq!(w.take(), Changed::Keys(BTreeSet::new()));
        let batch = [b"b1".as_slice(), b"g/tag", b"pns", b"b1"];
        ws.changed(batch.iter().copied());
        ws.changed([b"b2".as_slice()].into_iter());
        assert_eq!(w.take(), Changed::Keys(keys(&["b1", "b2", "pns"])));
        assert_eq!(w.take(), Changed::Keys(BTreeSet::new()), "taken changes are gone");
    }

    #[test]
    fn a_replaced_state_or_too_many_keys_mean_read_everything() {
        let ws = Watches::default();
        let w = ws.watch(&[b"b"]);
        w.take();
        ws.changed([b"b1".as_slice()].into_iter());
        ws.replaced();
        assert_eq!(w.take(), Changed::All);
        let many: Vec<Vec<u8>> = (0..=MAX_PENDING).map(|i| format!("b{i}").into_bytes()).collect();
        ws.changed(many.iter().map(Vec::as_slice));
        assert_eq!(w.take(), Changed::All);
        assert_eq!(w.take(), Changed::Keys(BTreeSet::new()));
    }

    #[test]
    fn a_dropped_watch_is_forgotten() {
        let ws = Watches::default();
        let w = ws.watch(&[b"b"]);
        drop(w);
        ws.changed([b"b1".as_slice()].into_iter());
        let _kept = ws.watch(&[b"b"]);
        assert_eq!(ws.0.read().unwrap().len(), 1);
    }
}
