//! Several commands applied as one: the state a grouped entry's later
//! commands read is the stored state with the earlier commands' changes on
//! top, and the entry lands as one [`Changes`] list, atomically with its
//! log id, like any other entry.
//!
//! The leader groups concurrent client writes into one Raft entry
//! ([`crate::command::MetaRequest::Batch`]); each command keeps its own
//! checks and its own response, exactly as if it had been an entry of its
//! own right after the one before.

use std::collections::BTreeMap;

use super::{apply, prefix_end, Changes, StateError, StateRead};
use crate::command::{MetaCommand, MetaResponse};

/// `base` with pending writes on top: `None` is a pending delete.
pub struct Overlay<'a, S: StateRead> {
    base: &'a S,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a, S: StateRead> Overlay<'a, S> {
    pub fn new(base: &'a S) -> Self {
        Overlay { base, pending: BTreeMap::new() }
    }

    /// Applies `cmd` to what the commands before it left, as the state
    /// machine applies an entry: its deletes first, then its puts.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<MetaResponse, StateError> {
        let (resp, changes) = apply(&*self, cmd)?;
        for k in changes.deletes {
            self.pending.insert(k, None);
        }
        for (k, v) in changes.puts {
            self.pending.insert(k, Some(v));
        }
        Ok(resp)
    }

    /// What all the commands applied so far change, each key once.
    pub fn into_changes(self) -> Changes {
        let mut out = Changes::default();
        for (k, v) in self.pending {
            match v {
                Some(v) => out.puts.push((k, v)),
                None => out.deletes.push(k),
            }
        }
        out
    }

    /// Merges the base's `[from, to)` rows with the pending ones, in key
    /// order, stopping after `limit`.
    fn merged(&self, base: Vec<(Vec<u8>, Vec<u8>)>, from: &[u8], to: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::with_capacity(base.len().min(limit));
        let mut pending = self.pending.range::<[u8], _>((std::ops::Bound::Included(from), std::ops::Bound::Excluded(to))).peekable();
        let mut base = base.into_iter().peekable();
        while out.len() < limit {
            let order = match (base.peek(), pending.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((bk, _)), Some((pk, _))) => bk.as_slice().cmp(pk.as_slice()),
            };
            if order == std::cmp::Ordering::Less {
                out.push(base.next().expect("peeked"));
                continue;
            }
            if order == std::cmp::Ordering::Equal {
                // The pending write replaces the stored row.
                base.next();
            }
            if let (k, Some(v)) = pending.next().expect("peeked") {
                out.push((k.clone(), v.clone()));
            }
        }
        out
    }

    /// How many pending writes fall in `[from, to)`: each can hide at most
    /// one stored row.
    fn pending_in(&self, from: &[u8], to: &[u8]) -> usize {
        self.pending.range::<[u8], _>((std::ops::Bound::Included(from), std::ops::Bound::Excluded(to))).count()
    }
}

impl<S: StateRead> StateRead for Overlay<'_, S> {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.pending.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get_raw(key),
        }
    }

    fn get_many_raw(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let stored: Vec<Vec<u8>> = keys.iter().filter(|k| !self.pending.contains_key(*k)).cloned().collect();
        let mut stored = self.base.get_many_raw(&stored)?.into_iter();
        Ok(keys.iter().map(|k| self.pending.get(k).cloned().unwrap_or_else(|| stored.next().flatten())).collect())
    }

    fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        let base = self.base.scan_raw(prefix)?;
        Ok(self.merged(base, prefix, &prefix_end(prefix), usize::MAX))
    }

    fn range_raw(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let base = self.base.range_raw(from, to, limit.saturating_add(self.pending_in(from, to)))?;
        Ok(self.merged(base, from, to, limit))
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    use super::*;
    use crate::state::MemState;

    /// A state holding exactly `rows`.
    fn mem(rows: &BTreeMap<Vec<u8>, Vec<u8>>) -> MemState {
        let m = MemState::default();
        *m.0.lock().unwrap() = rows.clone();
        m
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        vec(0u8..4, 0..4)
    }

    proptest! {
        /// Every read through the overlay equals the same read of a state
        /// with the pending writes applied.
        #[test]
        fn reads_through_the_overlay_equal_reads_of_the_written_state(
            stored in btree_map(key(), vec(any::<u8>(), 0..3), 0..24),
            writes in vec((key(), proptest::option::of(vec(any::<u8>(), 0..3))), 0..24),
            from in key(), to in key(), limit in 0usize..30, prefix in key(), many in vec(key(), 0..8),
        ) {
            let base = mem(&stored);
            let mut overlay = Overlay::new(&base);
            let mut expected = stored.clone();
            for (k, v) in &writes {
                overlay.pending.insert(k.clone(), v.clone());
                match v {
                    Some(v) => { expected.insert(k.clone(), v.clone()); }
                    None => { expected.remove(k); }
                }
            }
            let written = mem(&expected);
            prop_assert_eq!(overlay.range_raw(&from, &to, limit)?, if from < to { written.range_raw(&from, &to, limit)? } else { Vec::new() });
            prop_assert_eq!(overlay.scan_raw(&prefix)?, written.scan_raw(&prefix)?);
            prop_assert_eq!(overlay.get_raw(&from)?, written.get_raw(&from)?);
            prop_assert_eq!(overlay.get_many_raw(&many)?, written.get_many_raw(&many)?);
        }
    }
}
