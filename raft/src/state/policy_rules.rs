//! What the tag policies say: their records, the patterns they match and
//! the scopes that cover a repository. A leaf of the tag rules: `tags`
//! asks it whether a policy locks a tag, and `tag_policies` (the policy
//! commands, which delete and lock tags through `tags`) builds on both.

use regex::Regex;

use super::{keys, Changes, StateError, StateRead};
use crate::command::*;

/// Why a tag pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a tag pattern has 1 to {MAX_TAG_PATTERN_LEN} characters")]
    Length,
    /// `why` is the last line of the regex crate's explanation.
    #[error("tag pattern {pattern:?} is not a regular expression: {why}")]
    NotARegex { pattern: String, why: String },
}

/// The regular expression of `pattern`, matched against whole names.
pub fn compile(pattern: &str) -> Result<Regex, PatternError> {
    if pattern.is_empty() || pattern.len() > MAX_TAG_PATTERN_LEN {
        return Err(PatternError::Length);
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| PatternError::NotARegex { pattern: pattern.to_string(), why: e.to_string().lines().last().unwrap_or_default().trim().to_string() })
}

/// Whether the policy with `pattern` is about `tag`. A pattern that no
/// longer compiles (never stored so) covers nothing.
pub(super) fn covers(pattern: &TagPattern, tag: &str) -> bool {
    compile(&pattern.pattern).is_ok_and(|re| re.is_match(tag) == pattern.matches)
}

/// The scopes whose policies cover `repo`: its namespace and itself.
pub(super) fn scopes_of(repo: &str) -> Vec<&str> {
    namespace_of(repo).into_iter().chain(std::iter::once(repo)).collect()
}

/// The immutability policies of `scope`.
pub fn immutability_policies(state: &impl StateRead, scope: &str) -> Result<Vec<ImmutabilityPolicyRecord>, StateError> {
    state.scan(&keys::immutability_policies_of(scope))
}

/// The auto-prune policies of `scope`.
pub fn autoprune_policies(state: &impl StateRead, scope: &str) -> Result<Vec<AutoPrunePolicyRecord>, StateError> {
    state.scan(&keys::autoprune_policies_of(scope))
}

/// Whether a policy covering `repo` locks `tag`.
pub(super) fn locked_by_policy(state: &impl StateRead, repo: &str, tag: &str) -> Result<bool, StateError> {
    for scope in scopes_of(repo) {
        if immutability_policies(state, scope)?.iter().any(|p| covers(&p.pattern, tag)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A namespace's or repository's policies go with it.
pub(super) fn forget_scope(state: &impl StateRead, ch: &mut Changes, scope: &str) -> Result<(), StateError> {
    for prefix in [keys::immutability_policies_of(scope), keys::autoprune_policies_of(scope)] {
        for (k, _) in state.scan_raw(&prefix)? {
            ch.delete(k);
        }
    }
    Ok(())
}
