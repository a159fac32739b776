//! The state machine's logic, apart from where it is stored.
//!
//! `apply` reads the current state through [`StateRead`] and returns the
//! changes a command makes as a [`Changes`] list; the RocksDB state machine
//! writes that list atomically with the new applied log id. Keeping the rules
//! here, free of RocksDB, keeps them easy to read and to test.
//!
//! Key layout (one keyspace; the first byte names the record kind):
//!
//! | key | value |
//! |---|---|
//! | `c` | [`ClusterRecord`] |
//! | `i` | next node id (u64) |
//! | `n` + id (u64 BE) | [`NodeRecord`] |
//! | `t` + token id | [`JoinTokenRecord`] |
//! | `u` + user name | [`UserRecord`] |
//! | `r` + repo | [`RepositoryRecord`] |
//! | `m` + repo + `\0` + digest | [`ManifestRecord`] |
//! | `g` + repo + `\0` + tag | [`TagRecord`]: the tag's live row |
//! | `e` + repo + `\0` + tag | [`TagLifeRecord`]: the live row's expiration, immutability, reversion |
//! | `h` + repo + `\0` + tag + `\0` + end (ms, u64 BE) + start (ms, u64 BE) + digest | [`TagHistoryRecord`]: a closed row |
//! | `X` + namespace | [`NamespaceLifeRecord`]: the time machine window |
//! | `I` + scope + `\0` + uuid | [`ImmutabilityPolicyRecord`] of a namespace or repository |
//! | `P` + scope + `\0` + uuid | [`AutoPrunePolicyRecord`] of a namespace or repository |
//! | `Q` + namespace | [`QuotaRecord`] |
//! | `D` | the cluster's default Reject quota (u64 bytes) |
//! | `U` + namespace | usage of a namespace with a quota (u64 bytes) |
//! | `q` + namespace + `\0` + digest | how many of the namespace's manifests reference the blob (u64) |
//! | `b` + digest | [`BlobRecord`] |
//! | `l` + repo + `\0` + digest | [`BlobLink`] |
//! | `p` + namespace | [`Placement`] |
//! | `s` + repo + `\0` + subject + `\0` + digest | `()`: referrer index |
//! | `o` + org | [`OrgRecord`](identity::OrgRecord) |
//! | `T` + org + `\0` + team | [`TeamRecord`](identity::TeamRecord) |
//! | `R` + namespace + `\0` + short name | [`RobotRecord`](identity::RobotRecord) |
//! | `A` + token id | [`AppTokenRecord`](identity::AppTokenRecord) |
//! | `K` | the token-signing keys, `Vec<`[`TokenKey`](identity::TokenKey)`>` |
//! | `L` + time (ms, u64 BE) + id (u64 BE) | [`AuditRecord`](identity::AuditRecord) |
//! | `G` + user or robot name | credential generation (u64), see [`identity`] |
//! | `a` | [`CaTrust`](crate::ca::CaTrust), once the CA has rotated |
//! | `N` + id (u64 BE) | fingerprint of the CA the node runs on, see [`crate::ca`] |
//! | `W`, `V`, `w`, `x` | notifications, their scopes, their outbox, events queued once: see [`notifications`] |
//! | `y` + repo | [`RepoState`](crate::mirror::RepoState), see [`mirror`] |
//! | `Y` + repo | [`MirrorRecord`](crate::mirror::MirrorRecord) |
//! | `O` + client id | [`OAuthAppRecord`], see [`oauth`] |
//! | `C` + SHA-256 of a code | [`OAuthCodeRecord`] |
//! | `E` + client id + `\0` + token id | `()`: the application holds that application token |
//! | `S`, `k`, `F`, `J` | scans, layer indexes, feeds, feed generation: see [`scan`] |
//! | `Z` + sequence (u64 BE) | [`DrillReportRecord`]: the recent drills, see [`drills`] |
//!
//! Values are `berth_common::codec` envelopes of format version
//! [`RECORD_VERSION`].

use berth_common::{decode_versioned, encode_versioned, CodecError};
use serde::{de::DeserializeOwned, Serialize};

use std::collections::BTreeMap;

use berth_common::{Digest, NodeId};

use crate::command::*;

pub use crate::records::RECORD_VERSION;
pub use registry::{any_blob_repo, blob_repos};

pub mod ca;
mod cluster;
pub mod drills;
pub mod identity;
pub mod mirror;
pub mod notifications;
pub mod oauth;
pub mod overlay;
pub mod policy_rules;
pub mod proxycache;
pub mod quotas;
mod registry;
pub mod scan;
pub mod tag_policies;
pub mod tags;

pub mod keys {
    use berth_common::{Digest, NodeId};

    pub const CLUSTER: &[u8] = b"c";
    pub const NEXT_NODE_ID: &[u8] = b"i";
    pub const NODE_PREFIX: &[u8] = b"n";
    pub const TOKEN_PREFIX: &[u8] = b"t";
    pub const USER_PREFIX: &[u8] = b"u";
    pub const REPO_PREFIX: &[u8] = b"r";
    pub const MANIFEST_PREFIX: &[u8] = b"m";
    pub const TAG_PREFIX: &[u8] = b"g";
    pub const TAG_LIFE_PREFIX: &[u8] = b"e";
    pub const TAG_HISTORY_PREFIX: &[u8] = b"h";
    pub const BLOB_PREFIX: &[u8] = b"b";
    pub const LINK_PREFIX: &[u8] = b"l";
    pub const PLACEMENT_PREFIX: &[u8] = b"p";
    pub const REFERRER_PREFIX: &[u8] = b"s";
    pub const ORG_PREFIX: &[u8] = b"o";
    pub const TEAM_PREFIX: &[u8] = b"T";
    pub const ROBOT_PREFIX: &[u8] = b"R";
    pub const APP_TOKEN_PREFIX: &[u8] = b"A";
    pub const TOKEN_KEYS: &[u8] = b"K";
    pub const AUDIT_PREFIX: &[u8] = b"L";
    pub const CREDENTIAL_GENERATION_PREFIX: &[u8] = b"G";
    pub const CA_TRUST: &[u8] = b"a";
    pub const NODE_CA_PREFIX: &[u8] = b"N";
    pub const NAMESPACE_LIFE_PREFIX: &[u8] = b"X";
    pub const IMMUTABILITY_POLICY_PREFIX: &[u8] = b"I";
    pub const AUTOPRUNE_POLICY_PREFIX: &[u8] = b"P";
    pub const QUOTA_PREFIX: &[u8] = b"Q";
    pub const DEFAULT_QUOTA: &[u8] = b"D";
    pub const QUOTA_USAGE_PREFIX: &[u8] = b"U";
    pub const QUOTA_BLOB_PREFIX: &[u8] = b"q";
    pub const OAUTH_APP_PREFIX: &[u8] = b"O";
    pub const OAUTH_CODE_PREFIX: &[u8] = b"C";
    pub const OAUTH_TOKEN_PREFIX: &[u8] = b"E";
    pub const BLOB_REPO_PREFIX: &[u8] = b"d";
    /// Present once blob records leave the repositories they are linked
    /// into to [`blob_repo`] keys (see `state::registry`): set by the
    /// bootstrap of a new cluster, and in an upgraded one by
    /// [`crate::command::MetaCommand::IndexBlobRepos`].
    pub const BLOB_REPO_INDEX: &[u8] = b"vblob-repo-index";

    /// Whether the record at `key` describes the cluster itself (its id and
    /// signing keys, its CA, its nodes and their join tokens) rather than
    /// what it stores: a restore into a new cluster keeps the new cluster's
    /// own and takes everything else from the backup.
    pub fn belongs_to_cluster(key: &[u8]) -> bool {
        [CLUSTER, NEXT_NODE_ID, NODE_PREFIX, TOKEN_PREFIX, TOKEN_KEYS, CA_TRUST, NODE_CA_PREFIX].iter().any(|p| key.starts_with(p))
    }

    fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut k = prefix.to_vec();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                k.push(0);
            }
            k.extend_from_slice(p);
        }
        k
    }

    pub fn node(id: NodeId) -> Vec<u8> {
        join(NODE_PREFIX, &[&id.to_be_bytes()])
    }
    pub fn node_ca(id: NodeId) -> Vec<u8> {
        join(NODE_CA_PREFIX, &[&id.to_be_bytes()])
    }
    pub fn token(id: &str) -> Vec<u8> {
        join(TOKEN_PREFIX, &[id.as_bytes()])
    }
    pub fn user(name: &str) -> Vec<u8> {
        join(USER_PREFIX, &[name.as_bytes()])
    }
    pub fn repo(name: &str) -> Vec<u8> {
        join(REPO_PREFIX, &[name.as_bytes()])
    }
    pub fn manifest(repo: &str, digest: &Digest) -> Vec<u8> {
        join(MANIFEST_PREFIX, &[repo.as_bytes(), digest.to_string().as_bytes()])
    }
    /// Prefix of every tag of `repo`; tags sort lexically after it.
    pub fn tags_of(repo: &str) -> Vec<u8> {
        let mut k = join(TAG_PREFIX, &[repo.as_bytes()]);
        k.push(0);
        k
    }
    pub fn tag(repo: &str, tag: &str) -> Vec<u8> {
        join(TAG_PREFIX, &[repo.as_bytes(), tag.as_bytes()])
    }
    pub fn tag_life(repo: &str, tag: &str) -> Vec<u8> {
        join(TAG_LIFE_PREFIX, &[repo.as_bytes(), tag.as_bytes()])
    }
    /// Prefix of the live-row extras of every tag of `repo`.
    pub fn tag_lives_of(repo: &str) -> Vec<u8> {
        let mut k = join(TAG_LIFE_PREFIX, &[repo.as_bytes()]);
        k.push(0);
        k
    }
    /// Prefix of the history of `tag` in `repo`, oldest end first.
    pub fn tag_history(repo: &str, tag: &str) -> Vec<u8> {
        let mut k = join(TAG_HISTORY_PREFIX, &[repo.as_bytes(), tag.as_bytes()]);
        k.push(0);
        k
    }
    /// Prefix of the history of every tag of `repo`.
    pub fn tag_histories_of(repo: &str) -> Vec<u8> {
        let mut k = join(TAG_HISTORY_PREFIX, &[repo.as_bytes()]);
        k.push(0);
        k
    }
    /// One closed row; the digest keeps two rows with the same times apart.
    pub fn tag_history_row(repo: &str, tag: &str, end_ms: u64, start_ms: u64, digest: &Digest) -> Vec<u8> {
        let mut k = tag_history(repo, tag);
        k.extend_from_slice(&end_ms.to_be_bytes());
        k.extend_from_slice(&start_ms.to_be_bytes());
        k.extend_from_slice(digest.to_string().as_bytes());
        k
    }
    pub fn namespace_life(namespace: &str) -> Vec<u8> {
        join(NAMESPACE_LIFE_PREFIX, &[namespace.as_bytes()])
    }
    pub fn immutability_policy(scope: &str, uuid: &str) -> Vec<u8> {
        join(IMMUTABILITY_POLICY_PREFIX, &[scope.as_bytes(), uuid.as_bytes()])
    }
    /// Prefix of the immutability policies of a namespace or repository.
    pub fn immutability_policies_of(scope: &str) -> Vec<u8> {
        let mut k = join(IMMUTABILITY_POLICY_PREFIX, &[scope.as_bytes()]);
        k.push(0);
        k
    }
    pub fn autoprune_policy(scope: &str, uuid: &str) -> Vec<u8> {
        join(AUTOPRUNE_POLICY_PREFIX, &[scope.as_bytes(), uuid.as_bytes()])
    }
    /// Prefix of the auto-prune policies of a namespace or repository.
    pub fn autoprune_policies_of(scope: &str) -> Vec<u8> {
        let mut k = join(AUTOPRUNE_POLICY_PREFIX, &[scope.as_bytes()]);
        k.push(0);
        k
    }
    pub fn quota(ns: &str) -> Vec<u8> {
        join(QUOTA_PREFIX, &[ns.as_bytes()])
    }
    pub fn quota_usage(ns: &str) -> Vec<u8> {
        join(QUOTA_USAGE_PREFIX, &[ns.as_bytes()])
    }
    pub fn quota_blob(ns: &str, digest: &Digest) -> Vec<u8> {
        join(QUOTA_BLOB_PREFIX, &[ns.as_bytes(), digest.to_string().as_bytes()])
    }
    /// Prefix of the blob counts of a namespace's usage.
    pub fn quota_blobs_of(ns: &str) -> Vec<u8> {
        let mut k = join(QUOTA_BLOB_PREFIX, &[ns.as_bytes()]);
        k.push(0);
        k
    }
    pub fn placement(namespace: &str) -> Vec<u8> {
        join(PLACEMENT_PREFIX, &[namespace.as_bytes()])
    }
    pub fn link(repo: &str, digest: &Digest) -> Vec<u8> {
        join(LINK_PREFIX, &[repo.as_bytes(), digest.to_string().as_bytes()])
    }
    /// Prefix of the referrers of `subject` in `repo`.
    pub fn referrers_of(repo: &str, subject: &Digest) -> Vec<u8> {
        let mut k = join(REFERRER_PREFIX, &[repo.as_bytes(), subject.to_string().as_bytes()]);
        k.push(0);
        k
    }
    pub fn referrer(repo: &str, subject: &Digest, digest: &Digest) -> Vec<u8> {
        join(REFERRER_PREFIX, &[repo.as_bytes(), subject.to_string().as_bytes(), digest.to_string().as_bytes()])
    }
    /// Prefix of every manifest of `repo`.
    pub fn manifests_of(repo: &str) -> Vec<u8> {
        let mut k = join(MANIFEST_PREFIX, &[repo.as_bytes()]);
        k.push(0);
        k
    }
    pub fn blob(digest: &Digest) -> Vec<u8> {
        join(BLOB_PREFIX, &[digest.to_string().as_bytes()])
    }
    /// The digest a blob record's key names (the inverse of [`blob`]).
    pub fn blob_digest(key: &[u8]) -> Option<Digest> {
        std::str::from_utf8(key.strip_prefix(BLOB_PREFIX)?).ok()?.parse().ok()
    }
    /// That `repo` links blob `digest` (the value: when it last did), by
    /// blob: [`link`] the other way round, so a blob shared by many
    /// repositories costs a key each, not a longer record.
    pub fn blob_repo(digest: &Digest, repo: &str) -> Vec<u8> {
        join(BLOB_REPO_PREFIX, &[digest.to_string().as_bytes(), repo.as_bytes()])
    }
    /// Prefix of the [`blob_repo`] keys of `digest`.
    pub fn blob_repos_of(digest: &Digest) -> Vec<u8> {
        let mut k = join(BLOB_REPO_PREFIX, &[digest.to_string().as_bytes()]);
        k.push(0);
        k
    }
    /// Prefix of the blob links of `repo`.
    pub fn links_of(repo: &str) -> Vec<u8> {
        let mut k = join(LINK_PREFIX, &[repo.as_bytes()]);
        k.push(0);
        k
    }
    /// Prefix of every referrer entry of `repo`.
    pub fn referrers_in(repo: &str) -> Vec<u8> {
        let mut k = join(REFERRER_PREFIX, &[repo.as_bytes()]);
        k.push(0);
        k
    }
    /// Prefix of the repositories of namespace `ns` (`ns/…`).
    pub fn repos_in(ns: &str) -> Vec<u8> {
        let mut k = repo(ns);
        k.push(b'/');
        k
    }
    pub fn org(name: &str) -> Vec<u8> {
        join(ORG_PREFIX, &[name.as_bytes()])
    }
    pub fn team(org: &str, team: &str) -> Vec<u8> {
        join(TEAM_PREFIX, &[org.as_bytes(), team.as_bytes()])
    }
    pub fn teams_of(org: &str) -> Vec<u8> {
        let mut k = join(TEAM_PREFIX, &[org.as_bytes()]);
        k.push(0);
        k
    }
    pub fn robot(namespace: &str, short: &str) -> Vec<u8> {
        join(ROBOT_PREFIX, &[namespace.as_bytes(), short.as_bytes()])
    }
    pub fn robots_of(namespace: &str) -> Vec<u8> {
        let mut k = join(ROBOT_PREFIX, &[namespace.as_bytes()]);
        k.push(0);
        k
    }
    pub fn app_token(id: &str) -> Vec<u8> {
        join(APP_TOKEN_PREFIX, &[id.as_bytes()])
    }
    /// A user's (`name`) or robot's (`ns+short`) credential generation;
    /// the names never collide, as user names hold no `+`.
    pub fn credential_generation(account: &str) -> Vec<u8> {
        join(CREDENTIAL_GENERATION_PREFIX, &[account.as_bytes()])
    }
    pub fn oauth_app(client_id: &str) -> Vec<u8> {
        join(OAUTH_APP_PREFIX, &[client_id.as_bytes()])
    }
    pub fn oauth_code(code_sha256: &str) -> Vec<u8> {
        join(OAUTH_CODE_PREFIX, &[code_sha256.as_bytes()])
    }
    pub fn oauth_token(client_id: &str, token_id: &str) -> Vec<u8> {
        join(OAUTH_TOKEN_PREFIX, &[client_id.as_bytes(), token_id.as_bytes()])
    }
    /// Prefix of the tokens application `client_id` holds.
    pub fn oauth_tokens_of(client_id: &str) -> Vec<u8> {
        let mut k = join(OAUTH_TOKEN_PREFIX, &[client_id.as_bytes()]);
        k.push(0);
        k
    }
    pub fn audit(at_ms: u64, id: u64) -> Vec<u8> {
        let mut k = AUDIT_PREFIX.to_vec();
        k.extend_from_slice(&at_ms.to_be_bytes());
        k.extend_from_slice(&id.to_be_bytes());
        k
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state read failed: {0}")]
    Read(String),
    #[error("record under key {key:?} is unreadable: {source}")]
    Codec { key: String, source: CodecError },
}

/// Read access to the current state.
pub trait StateRead {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Every (key, value) whose key starts with `prefix`, in key order.
    fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError>;
    /// Up to `limit` (key, value) pairs with `from <= key < to`, in key order.
    fn range_raw(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError>;
    /// The values of `keys`, in their order: [`StateRead::get_raw`] of
    /// each, which a store may answer in one batch (RocksDB reads a data
    /// block once for all the keys in it).
    fn get_many_raw(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        keys.iter().map(|k| self.get_raw(k)).collect()
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(v) => decode(key, &v).map(Some),
        }
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StateError> {
        self.scan_raw(prefix)?.iter().map(|(k, v)| decode(k, v)).collect()
    }
}

/// Reads a record scanned from the state.
pub fn decode_record<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, StateError> {
    decode(key, v)
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, StateError> {
    decode_versioned(RECORD_VERSION, v).map_err(|source| StateError::Codec { key: String::from_utf8_lossy(key).into_owned(), source })
}

/// What one command changes, applied atomically by the store.
#[derive(Debug, Default)]
pub struct Changes {
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub deletes: Vec<Vec<u8>>,
}

impl Changes {
    pub(crate) fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        // Encoding our own plain records into a Vec cannot fail.
        let bytes = encode_versioned(RECORD_VERSION, value).expect("records always encode");
        self.puts.push((key, bytes));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.deletes.push(key);
    }
}

/// Whether `node` is recorded as removed from the cluster. Ids are never
/// reused, so such a node is refused for good; an id without a record (a
/// node that joined a moment ago, as far as this state knows) is not.
pub fn node_removed(state: &impl StateRead, node: NodeId) -> Result<bool, StateError> {
    Ok(state.get::<NodeRecord>(&keys::node(node))?.is_some_and(|n| n.removed))
}

/// The smallest key after every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// A page of records under `prefix` in key order: the first `limit` whose
/// key suffix (what follows `prefix`) sorts after `after`, or from the
/// first when `after` is `None`. A page is read from where it starts, so
/// its cost does not grow with the records before it.
pub fn page_after(state: &impl StateRead, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
    let mut from = prefix.to_vec();
    if let Some(a) = after {
        // The smallest suffix that sorts after `a`.
        from.extend_from_slice(a);
        from.push(0);
    }
    state.range_raw(&from, &prefix_end(prefix), limit)
}

/// A page of at most `n` items from the records under `prefix` whose key
/// suffix sorts after `last`: reads batches from `last` on until the page
/// is full, so a page costs the records it passes, not the whole range.
/// `pick` turns each batch (and the suffix it starts after) into the items
/// it keeps, in order. Returns the items and whether more follow.
#[allow(clippy::type_complexity)]
pub fn page_filtered<T>(
    state: &impl StateRead,
    prefix: &[u8],
    last: Option<&[u8]>,
    n: usize,
    mut pick: impl FnMut(&[(Vec<u8>, Vec<u8>)], Option<&[u8]>) -> Result<Vec<T>, StateError>,
) -> Result<(Vec<T>, bool), StateError> {
    let mut out = Vec::new();
    let mut after = last.map(<[u8]>::to_vec);
    loop {
        let want = (n.saturating_add(1) - out.len()).clamp(16, 4096);
        let batch = page_after(state, prefix, after.as_deref(), want)?;
        for item in pick(&batch, after.as_deref())? {
            if out.len() == n {
                return Ok((out, true));
            }
            out.push(item);
        }
        match batch.last() {
            Some((k, _)) if batch.len() == want => after = Some(k[prefix.len()..].to_vec()),
            _ => return Ok((out, false)),
        }
    }
}

/// Every blob record, with its digest.
pub fn blobs(state: &impl StateRead) -> Result<Vec<(Digest, BlobRecord)>, StateError> {
    let mut out = Vec::new();
    for_each_blob(state, |digest, rec| {
        out.push((digest, rec));
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with every blob record in digest order, reading them a page
/// at a time: a million records are never all in memory at once.
pub fn for_each_blob(state: &impl StateRead, mut f: impl FnMut(Digest, BlobRecord) -> Result<(), StateError>) -> Result<(), StateError> {
    const PAGE: usize = 1024;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = page_after(state, keys::BLOB_PREFIX, after.as_deref(), PAGE)?;
        for (k, v) in &page {
            let Some(digest) = keys::blob_digest(k) else { continue };
            f(digest, decode(k, v)?)?;
        }
        match page.last() {
            Some((k, _)) if page.len() == PAGE => after = Some(k[keys::BLOB_PREFIX.len()..].to_vec()),
            _ => return Ok(()),
        }
    }
}

/// Applies one command: its response and the changes to write. Each
/// command has its handler, in the module of what it changes.
pub fn apply(state: &impl StateRead, cmd: &MetaCommand) -> Result<(MetaResponse, Changes), StateError> {
    use MetaCommand as M;
    // Who makes a content write matters to a mirror repository; the
    // repository's state judges it before its handler does.
    // A proxy-cache organization's fill is the one writer into it.
    let (fill, cmd) = match cmd {
        M::ProxyCache(ProxyCacheCommand::Fill(inner)) if proxycache_fill_ok(inner) => (true, &**inner),
        M::ProxyCache(ProxyCacheCommand::Fill(_)) => return Ok((MetaResponse::Refused("a fill wraps one plain write".into()), Changes::default())),
        cmd => (false, cmd),
    };
    let (robot, cmd) = match cmd {
        M::AsRobot { robot, cmd } if !matches!(**cmd, M::AsRobot { .. }) => (Some(robot.as_str()), &**cmd),
        M::AsRobot { .. } => return Ok((MetaResponse::Refused("a robot's write is wrapped once".into()), Changes::default())),
        cmd => (None, cmd),
    };
    if let Some(refused) = mirror::guard(state, cmd, robot)? {
        return Ok((refused, Changes::default()));
    }
    if let Some(refused) = proxycache::guard(state, cmd, fill)? {
        return Ok((refused, Changes::default()));
    }
    let mut ch = Changes::default();
    let ch_ = &mut ch;
    let resp = match cmd {
        M::Bootstrap(rec) => cluster::bootstrap(state, ch_, rec),
        M::RegisterNode { registration, token, now_ms } => cluster::register_node(state, ch_, registration, token.as_ref(), *now_ms),
        M::SetNodeRole { node, role } => cluster::set_node_role(state, ch_, *node, *role),
        M::RemoveNode { node } => cluster::remove_node(state, ch_, *node),
        M::CreateJoinToken(rec) => cluster::create_join_token(state, ch_, rec),
        M::RevokeJoinToken { id } => cluster::revoke_join_token(state, ch_, id),
        M::Probe { .. } => Ok(MetaResponse::Done),
        M::Identity(cmd) => identity::apply(state, ch_, cmd),
        M::PutUser(rec) => identity::put_user(state, ch_, rec),
        // An older form of the identity command, still read from old logs.
        M::CreateRepository(rec) => identity::create_repository(state, ch_, rec),
        M::Ca(cmd) => ca::apply(state, ch_, cmd),
        M::PutManifest { record, tag } => registry::put_manifest(state, ch_, record, tag.as_deref(), TagLifeRecord::default()),
        // The older deletes carry no time (see `tags`).
        M::DeleteManifest { repo, digest } => registry::delete_manifest(state, ch_, repo, digest, None),
        M::DeleteManifestAt { repo, digest, now_ms } => registry::delete_manifest(state, ch_, repo, digest, Some(*now_ms)),
        M::SetTag { repo, tag, digest, pushed_at_ms, if_current } => tags::set_tag(state, ch_, repo, tag, digest, *pushed_at_ms, if_current.as_ref()),
        M::DeleteTag { repo, tag, if_current } => tags::delete_tag(state, ch_, repo, tag, if_current.as_ref(), None),
        M::DeleteTagAt { repo, tag, if_current, now_ms } => tags::delete_tag(state, ch_, repo, tag, if_current.as_ref(), Some(*now_ms)),
        M::Tag(cmd) => apply_tag(state, ch_, cmd),
        M::PutManifestFrom { record, tag, origin, expiration_ms, immutable } => {
            // An immutable tag never expires: the lock wins over the label.
            let life = TagLifeRecord { expiration_ms: expiration_ms.filter(|_| !*immutable), immutable: *immutable, reverted: false };
            registry::put_manifest_from(state, ch_, record, tag.as_deref(), origin, life)
        }
        M::Notification(cmd) => notifications::apply(state, ch_, cmd),
        M::Quota(cmd) => quotas::apply(state, ch_, cmd),
        M::SetPlacement { namespace, placement } => registry::set_placement(ch_, namespace, placement),
        M::AddBlobHolder { digest, size: _, node } => registry::add_blob_holder(state, ch_, digest, *node),
        M::RemoveBlobHolder { digest, node } => registry::remove_blob_holder(state, ch_, digest, *node),
        M::LinkBlob { repo, digest, size, node, now_ms } => registry::link_blob(state, ch_, repo, digest, *size, *node, *now_ms),
        M::UnlinkBlob { repo, digest } => registry::unlink_blob(state, ch_, repo, digest),
        M::SweepBlob { digest, cutoff_ms } => registry::sweep_blob(state, ch_, digest, *cutoff_ms),
        M::IndexBlobRepos => registry::index_blob_repos(ch_),
        M::Mirror(cmd) => mirror::apply(state, ch_, cmd),
        M::ProxyCache(cmd) => proxycache::apply(state, ch_, cmd),
        M::OAuth(cmd) => oauth::apply(state, ch_, cmd),
        M::Scan(cmd) => scan::apply(state, ch_, cmd),
        M::RecordDrill(rec) => drills::record(state, ch_, rec),
        M::AsRobot { .. } => unreachable!("unwrapped above"),
    }?;
    // A stored image is queued for scanning in the command that stores it.
    if let (MetaResponse::Done, M::PutManifest { record, .. } | M::PutManifestFrom { record, .. }) = (&resp, cmd) {
        scan::on_manifest_stored(state, &mut ch, record)?;
    }
    Ok((resp, ch))
}

/// Tag commands: the lifecycle's to [`tags`], the policies' to
/// [`tag_policies`] (which deletes and locks tags through `tags`).
fn apply_tag(state: &impl StateRead, ch: &mut Changes, cmd: &TagCommand) -> Result<MetaResponse, StateError> {
    match cmd {
        TagCommand::SetExpiration { repo, tag, expiration_ms, now_ms } => tags::set_expiration(state, ch, repo, tag, *expiration_ms, *now_ms),
        TagCommand::SetImmutable { repo, tag, immutable, now_ms } => tags::set_immutable(state, ch, repo, tag, *immutable, *now_ms),
        TagCommand::Restore { repo, tag, digest, now_ms } => tags::restore(state, ch, repo, tag, digest, *now_ms),
        TagCommand::CloseExpired { repo, tag, now_ms } => tags::close_expired(state, ch, repo, tag, *now_ms),
        TagCommand::SetTimeMachine { namespace, tag_expiration_s } => tags::set_time_machine(state, ch, namespace, *tag_expiration_s),
        TagCommand::PruneHistory { repo, now_ms } => tags::prune_history(state, ch, repo, *now_ms),
        TagCommand::CollectManifests { repo, digests, now_ms, min_age_ms } => tags::collect_manifests(state, ch, repo, digests, *now_ms, *min_age_ms),
        TagCommand::PutImmutabilityPolicy { scope, policy, now_ms } => tag_policies::put_immutability_policy(state, ch, scope, policy, *now_ms),
        TagCommand::DeleteImmutabilityPolicy { scope, uuid } => tag_policies::delete_policy(state, ch, keys::immutability_policy(scope, uuid)),
        TagCommand::PutAutoPrunePolicy { scope, policy } => tag_policies::put_autoprune_policy(state, ch, scope, policy),
        TagCommand::DeleteAutoPrunePolicy { scope, uuid } => tag_policies::delete_policy(state, ch, keys::autoprune_policy(scope, uuid)),
        TagCommand::AutoPrune { repo, tags, now_ms } => tag_policies::autoprune(state, ch, repo, tags, *now_ms),
    }
}

/// Whether `inner` may be wrapped in a fill: one plain write, not a
/// wrapper of its own.
fn proxycache_fill_ok(inner: &MetaCommand) -> bool {
    !matches!(inner, MetaCommand::AsRobot { .. } | MetaCommand::ProxyCache(_))
}

/// A state in a map, for testing rules without RocksDB (here and in the
/// node's permission tests).
#[derive(Default)]
pub struct MemState(std::sync::Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

impl StateRead for MemState {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.lock().expect("state lock").get(key).cloned())
    }
    fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        Ok(self
            .0
            .lock()
            .expect("state lock")
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn range_raw(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        Ok(self.0.lock().expect("state lock").range(from.to_vec()..to.to_vec()).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl MemState {
    /// Applies `cmd` as the state machine would.
    pub fn run(&self, cmd: MetaCommand) -> MetaResponse {
        let (resp, ch) = apply(self, &cmd).expect("a map never fails to read");
        let mut m = self.0.lock().expect("state lock");
        for (k, v) in ch.puts {
            m.insert(k, v);
        }
        for k in ch.deletes {
            m.remove(&k);
        }
        resp
    }

    /// Writes a record directly.
    pub fn put<T: Serialize>(&self, key: Vec<u8>, value: &T) {
        self.0.lock().expect("state lock").insert(key, encode_versioned(RECORD_VERSION, value).expect("records always encode"));
    }
}

#[cfg(test)]
mod tests {
    use berth_common::Digest;

    use super::*;

    type MapState = MemState;

    fn reg(addr: &str) -> NodeRegistration {
        NodeRegistration { region: "eu".into(), peer_addr: addr.into(), http_addr: "h".into(), role: NodeRole::Auto }
    }

    fn token(id: &str, expires_at_ms: u64, max_uses: Option<u32>) -> JoinTokenRecord {
        JoinTokenRecord { id: id.into(), secret_sha256: "s".into(), created_at_ms: 0, expires_at_ms, revoked: false, uses: 0, max_uses }
    }

    fn proof(id: &str, secret: &str) -> Option<TokenProof> {
        Some(TokenProof { id: id.into(), secret_sha256: secret.into() })
    }

    /// A manifest record of `repo` with `digest`, referencing `blobs`.
    fn manifest_record(repo: &str, digest: Digest, blobs: Vec<Digest>) -> ManifestRecord {
        ManifestRecord { repo: repo.into(), digest, media_type: "m".into(), bytes: vec![], blobs, children: vec![], subject: None, pushed_at_ms: 0 }
    }

    fn create_repo(name: &str) -> MetaCommand {
        MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new(name, 0)))
    }

    /// A namespace exists before anything is stored under it, and a name
    /// that repositories hold cannot be taken by a new user or organization
    /// (who would then administer them).
    #[test]
    fn repositories_need_a_namespace_and_hold_it() {
        let s = MapState::default();
        let manifest = manifest_record("team/alpine", Digest::sha256_of(b"m"), vec![]);
        // No implicit repository, no implicit namespace.
        assert!(matches!(s.run(MetaCommand::PutManifest { record: manifest.clone(), tag: None }), MetaResponse::Refused(_)));
        assert!(matches!(s.run(create_repo("team/alpine")), MetaResponse::Refused(why) if why.contains("namespace team does not exist")));
        assert!(matches!(s.run(MetaCommand::CreateRepository(RepositoryRecord::new("team/alpine", 0))), MetaResponse::Refused(_)), "the older command too");
        assert_eq!(s.get_raw(&keys::repo("team/alpine")).unwrap(), None);
        // With its organization, it is created once, then holds the name.
        let org = |name: &str| {
            MetaCommand::Identity(IdentityCommand::CreateOrg {
                org: OrgRecord { name: name.into(), email: None, created_at_ms: 0 },
                owner: Some("admin".into()),
            })
        };
        assert_eq!(s.run(org("team")), MetaResponse::Done);
        assert_eq!(s.run(create_repo("team/alpine")), MetaResponse::Done);
        assert!(matches!(s.run(create_repo("team/alpine")), MetaResponse::Refused(_)));
        assert_eq!(s.run(MetaCommand::PutManifest { record: manifest, tag: None }), MetaResponse::Done);
        // The organization is deleted around its repository (as older
        // versions allowed): the name stays taken.
        s.0.lock().unwrap().remove(&keys::org("team"));
        assert!(matches!(s.run(org("team")), MetaResponse::Refused(why) if why.contains("taken")));
        assert!(matches!(
            s.run(MetaCommand::Identity(IdentityCommand::CreateUser(crate::command::UserRecord {
                name: "team".into(),
                password_hash: "h".into(),
                superuser: false,
                created_at_ms: 0,
            }))),
            MetaResponse::Refused(_)
        ));
        // A name without a namespace needs none.
        assert_eq!(s.run(create_repo("single")), MetaResponse::Done);
    }

    #[test]
    fn tokens_are_checked_atomically_with_registration() {
        let s = MapState::default();
        s.run(MetaCommand::CreateJoinToken(token("t1", 100, Some(1))));
        let join = |addr: &str, p, now| s.run(MetaCommand::RegisterNode { registration: reg(addr), token: p, now_ms: now });
        assert_eq!(join("a:1", proof("t1", "wrong"), 1), MetaResponse::Refused("join token secret is wrong".into()));
        assert_eq!(join("a:1", proof("nope", "s"), 1), MetaResponse::Refused("join token is not known to this cluster".into()));
        assert_eq!(join("a:1", proof("t1", "s"), 100), MetaResponse::Refused("join token has expired".into()));
        assert_eq!(join("a:1", proof("t1", "s"), 1), MetaResponse::NodeId(1));
        assert_eq!(join("a:2", proof("t1", "s"), 1), MetaResponse::Refused("join token has been used up".into()));
        s.run(MetaCommand::CreateJoinToken(token("t2", 100, None)));
        s.run(MetaCommand::RevokeJoinToken { id: "t2".into() });
        assert_eq!(join("a:2", proof("t2", "s"), 1), MetaResponse::Refused("join token was revoked".into()));
        assert!(matches!(join("a:1", None, 1), MetaResponse::Refused(_)), "same address twice");
        assert_eq!(s.run(MetaCommand::RemoveNode { node: 1 }), MetaResponse::Done);
        assert_eq!(join("a:1", None, 1), MetaResponse::NodeId(2), "a removed node's id is never reused");
    }

    #[test]
    fn credential_changes_bump_the_generation() {
        let s = MapState::default();
        let generation = |a: &str| s.get::<u64>(&keys::credential_generation(a)).unwrap().unwrap_or(0);
        let user = |name: &str, hash: &str, superuser| UserRecord { name: name.into(), password_hash: hash.into(), superuser, created_at_ms: 0 };
        s.run(MetaCommand::PutUser(user("admin", "h", true)));
        s.run(MetaCommand::PutUser(user("tom", "h1", false)));
        assert_eq!(generation("tom"), 0, "a new user starts at 0");
        s.run(MetaCommand::PutUser(user("tom", "h1", true)));
        assert_eq!(generation("tom"), 0, "a role change is not a credential change");
        s.run(MetaCommand::PutUser(user("tom", "h2", true)));
        assert_eq!(generation("tom"), 1, "a new password");
        let robot = |secret: &str| RobotRecord {
            namespace: "tom".into(),
            short: "ci".into(),
            description: String::new(),
            secret_sha256: secret.into(),
            created_at_ms: 0,
        };
        s.run(MetaCommand::Identity(IdentityCommand::PutRobot(robot("s1"))));
        s.run(MetaCommand::Identity(IdentityCommand::PutRobot(robot("s1"))));
        assert_eq!(generation("tom+ci"), 0, "the same secret again");
        s.run(MetaCommand::Identity(IdentityCommand::PutRobot(robot("s2"))));
        assert_eq!(generation("tom+ci"), 1, "a regenerated secret");
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::DeleteUser { name: "tom".into() })), MetaResponse::Done);
        assert_eq!((generation("tom"), generation("tom+ci")), (2, 2), "a deleted account's tokens die with it, and stay dead for a namesake");
        s.run(MetaCommand::Identity(IdentityCommand::CreateUser(user("tom", "h3", false))));
        assert_eq!(generation("tom"), 2);
    }

    #[test]
    fn a_promote_beyond_five_voters_is_refused() {
        let s = MapState::default();
        for i in 1..=7 {
            assert_eq!(s.run(MetaCommand::RegisterNode { registration: reg(&format!("a:{i}")), token: None, now_ms: 1 }), MetaResponse::NodeId(i));
        }
        let promote = |node| s.run(MetaCommand::SetNodeRole { node, role: NodeRole::Voter });
        for i in 1..=5 {
            assert_eq!(promote(i), MetaResponse::Done);
        }
        assert_eq!(promote(3), MetaResponse::Done, "promoting a promoted node again is fine");
        assert_eq!(
            promote(6),
            MetaResponse::Refused("node 6 not promoted: 5 nodes are promoted already and a cluster has at most 5 voters; demote one first".into())
        );
        assert_eq!(s.run(MetaCommand::SetNodeRole { node: 2, role: NodeRole::Learner }), MetaResponse::Done);
        assert_eq!(promote(6), MetaResponse::Done, "a demote makes room");
        assert_eq!(s.run(MetaCommand::RemoveNode { node: 6 }), MetaResponse::Done);
        assert_eq!(promote(7), MetaResponse::Done, "a removed node holds no seat");
    }

    #[test]
    fn conditional_tags() {
        let s = MapState::default();
        let d1 = Digest::sha256_of(b"1");
        let d2 = Digest::sha256_of(b"2");
        let tag = |digest: &Digest, cond| MetaCommand::SetTag { repo: "r".into(), tag: "t".into(), digest: digest.clone(), pushed_at_ms: 1, if_current: cond };
        assert_eq!(s.run(tag(&d1, None)), MetaResponse::NotFound, "tag of an unknown manifest");
        s.run(create_repo("r"));
        for d in [&d1, &d2] {
            s.run(MetaCommand::PutManifest { tag: None, record: manifest_record("r", d.clone(), vec![]) });
        }
        assert_eq!(s.run(tag(&d1, Some(None))), MetaResponse::Done);
        assert_eq!(s.run(tag(&d2, Some(None))), MetaResponse::Conflict { current: Some(d1.clone()) });
        assert_eq!(s.run(tag(&d2, Some(Some(d1.clone())))), MetaResponse::Done);
        assert_eq!(
            s.run(MetaCommand::DeleteTag { repo: "r".into(), tag: "t".into(), if_current: Some(d1.clone()) }),
            MetaResponse::Conflict { current: Some(d2.clone()) }
        );
        assert_eq!(s.run(MetaCommand::DeleteManifest { repo: "r".into(), digest: d2.clone() }), MetaResponse::Done);
        assert_eq!(s.get::<TagRecord>(&keys::tag("r", "t")).unwrap(), None, "deleting a manifest drops its tags");
    }

    #[test]
    fn reference_counts_and_sweeps() {
        reference_counts_and_sweeps_in(MapState::default());
        let indexed = MapState::default();
        assert_eq!(indexed.run(MetaCommand::IndexBlobRepos), MetaResponse::Done);
        reference_counts_and_sweeps_in(indexed);
    }

    /// [`reference_counts_and_sweeps`] in a state with or without the blob
    /// repository index.
    fn reference_counts_and_sweeps_in(s: MapState) {
        let (b, shared) = (Digest::sha256_of(b"b"), Digest::sha256_of(b"shared"));
        let link = |repo: &str, d: &Digest, t| MetaCommand::LinkBlob { repo: repo.into(), digest: d.clone(), size: 1, node: 1, now_ms: t };
        let manifest = |repo: &str, blobs: Vec<Digest>| manifest_record(repo, Digest::sha256_of(format!("{repo}{blobs:?}").as_bytes()), blobs);
        let refs = |d: &Digest| s.get::<BlobRecord>(&keys::blob(d)).unwrap().map(|r| r.refs);
        let sweep = |d: &Digest, cutoff_ms| MetaCommand::SweepBlob { digest: d.clone(), cutoff_ms };
        s.run(create_repo("x"));
        s.run(create_repo("y"));
        s.run(link("x", &b, 10));
        s.run(link("x", &shared, 10));
        s.run(link("y", &shared, 10));
        let mx = manifest("x", vec![b.clone(), shared.clone(), shared.clone()]);
        let my = manifest("y", vec![shared.clone()]);
        assert_eq!(s.run(MetaCommand::PutManifest { record: mx.clone(), tag: None }), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::PutManifest { record: mx.clone(), tag: None }), MetaResponse::Done, "pushing it again counts nothing twice");
        assert_eq!(s.run(MetaCommand::PutManifest { record: my.clone(), tag: None }), MetaResponse::Done);
        assert_eq!((refs(&b), refs(&shared)), (Some(1), Some(2)));
        // A manifest pushed again needs its blobs still linked, like a new one.
        assert_eq!(s.run(MetaCommand::UnlinkBlob { repo: "y".into(), digest: shared.clone() }), MetaResponse::Done);
        assert!(matches!(s.run(MetaCommand::PutManifest { record: my.clone(), tag: Some("again".into()) }), MetaResponse::Refused(_)));
        assert_eq!(s.get_raw(&keys::tag("y", "again")).unwrap(), None, "the refusal wrote no tag");
        assert_eq!(s.run(link("y", &shared, 10)), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::PutManifest { record: my, tag: Some("again".into()) }), MetaResponse::Done);
        assert_eq!((refs(&b), refs(&shared)), (Some(1), Some(2)), "an old manifest under a new tag counts nothing");
        assert!(matches!(s.run(sweep(&b, 100)), MetaResponse::Refused(_)), "referenced");
        s.run(MetaCommand::DeleteManifest { repo: "x".into(), digest: mx.digest.clone() });
        assert_eq!((refs(&b), refs(&shared)), (Some(0), Some(1)));
        assert!(matches!(s.run(sweep(&b, 5)), MetaResponse::Refused(_)), "linked after the cutoff");
        assert!(matches!(s.run(sweep(&shared, 100)), MetaResponse::Refused(_)), "still referenced by y");
        assert_eq!(s.run(sweep(&b, 100)), MetaResponse::Done);
        assert_eq!(s.get_raw(&keys::link("x", &b)).unwrap(), None, "its links went with it");
        assert_eq!(s.scan_raw(&keys::blob_repos_of(&b)).unwrap(), vec![], "and its index keys");
        // A push that raced the sweep loses cleanly; a late copy is not recorded.
        assert!(matches!(s.run(MetaCommand::PutManifest { record: manifest("x", vec![b.clone()]), tag: None }), MetaResponse::Refused(_)));
        assert_eq!(s.run(MetaCommand::AddBlobHolder { digest: b.clone(), size: 1, node: 2 }), MetaResponse::NotFound);
    }

    /// With the index, a blob linked into many repositories (a base layer)
    /// keeps a record of one size, and each link and unlink writes a key of
    /// its own: the record no longer lists every repository.
    #[test]
    fn a_shared_blob_costs_a_key_per_repository_not_a_longer_record() {
        let s = MapState::default();
        assert_eq!(s.run(MetaCommand::IndexBlobRepos), MetaResponse::Done);
        let base = Digest::sha256_of(b"base layer");
        let record_size = || s.get_raw(&keys::blob(&base)).unwrap().unwrap().len();
        let mut sizes = Vec::new();
        for i in 0..300u64 {
            let repo = format!("r{i:03}");
            assert_eq!(s.run(create_repo(&repo)), MetaResponse::Done);
            assert_eq!(s.run(MetaCommand::LinkBlob { repo, digest: base.clone(), size: 7, node: 1, now_ms: i }), MetaResponse::Done);
            sizes.push(record_size());
        }
        assert!(sizes.iter().all(|n| *n == sizes[0]), "the record does not grow: {:?}", &sizes[..5]);
        let rec: BlobRecord = s.get(&keys::blob(&base)).unwrap().unwrap();
        let repos = blob_repos(&s, &base, &rec).unwrap();
        assert_eq!(repos.len(), 300);
        assert_eq!(repos[7], ("r007".to_string(), 7), "each with when it was linked");
        assert!(any_blob_repo(&s, &base, &rec, |r| r == "r299").unwrap(), "found past the first page");
        assert!(!any_blob_repo(&s, &base, &rec, |r| r == "elsewhere").unwrap());
        assert_eq!(s.run(MetaCommand::UnlinkBlob { repo: "r007".into(), digest: base.clone() }), MetaResponse::Done);
        assert_eq!(s.get_raw(&keys::blob_repo(&base, "r007")).unwrap(), None);
        assert_eq!(blob_repos(&s, &base, &rec).unwrap().len(), 299);
        // A repository deleted leaves the index too.
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::DeleteRepository { name: "r008".into() })), MetaResponse::Done);
        assert_eq!(s.get_raw(&keys::blob_repo(&base, "r008")).unwrap(), None);
        assert_eq!(blob_repos(&s, &base, &rec).unwrap().len(), 298);
        // The sweep reads the times from the index.
        assert!(matches!(s.run(MetaCommand::SweepBlob { digest: base.clone(), cutoff_ms: 299 }), MetaResponse::Refused(why) if why.contains("recently")));
        assert_eq!(s.run(MetaCommand::SweepBlob { digest: base.clone(), cutoff_ms: 300 }), MetaResponse::Done);
        assert_eq!(s.scan_raw(&keys::blob_repos_of(&base)).unwrap(), vec![]);
        assert_eq!(s.scan_raw(&keys::links_of("r000")).unwrap(), vec![]);
    }

    /// A cluster made before the index lists repositories in the blob
    /// record; once the index is on, the next link or unlink of a blob
    /// moves its list to the index with the times it had, and a repository
    /// deleted is found in either place.
    #[test]
    fn a_listed_record_moves_to_the_index_when_next_linked() {
        let s = MapState::default();
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        let link = |repo: &str, d: &Digest, t| MetaCommand::LinkBlob { repo: repo.into(), digest: d.clone(), size: 1, node: 1, now_ms: t };
        for (i, repo) in ["x", "y", "z"].iter().enumerate() {
            s.run(create_repo(repo));
            assert_eq!(s.run(link(repo, &a, i as u64)), MetaResponse::Done);
            assert_eq!(s.run(link(repo, &b, i as u64)), MetaResponse::Done);
        }
        let rec = |d: &Digest| s.get::<BlobRecord>(&keys::blob(d)).unwrap().unwrap();
        assert_eq!(rec(&a).repos.len(), 3, "before the index, the record lists them");
        assert_eq!(s.scan_raw(keys::BLOB_REPO_PREFIX).unwrap(), vec![]);
        let before = blob_repos(&s, &a, &rec(&a)).unwrap();
        assert_eq!(s.run(MetaCommand::IndexBlobRepos), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::IndexBlobRepos), MetaResponse::Done, "idempotent");
        assert_eq!(blob_repos(&s, &a, &rec(&a)).unwrap(), before, "read alike before anything moved");
        s.run(create_repo("w"));
        assert_eq!(s.run(link("w", &a, 9)), MetaResponse::Done);
        assert!(rec(&a).repos.is_empty(), "moved on the next link");
        let mut after = before.clone();
        after.insert(0, ("w".to_string(), 9));
        assert_eq!(blob_repos(&s, &a, &rec(&a)).unwrap(), after);
        assert_eq!(s.run(MetaCommand::UnlinkBlob { repo: "y".into(), digest: b.clone() }), MetaResponse::Done);
        assert!(rec(&b).repos.is_empty(), "moved on an unlink, less the repository unlinked");
        assert_eq!(blob_repos(&s, &b, &rec(&b)).unwrap(), vec![("x".to_string(), 0), ("z".to_string(), 2)]);
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::DeleteRepository { name: "z".into() })), MetaResponse::Done);
        assert_eq!(blob_repos(&s, &b, &rec(&b)).unwrap(), vec![("x".to_string(), 0)]);
        assert_eq!(blob_repos(&s, &a, &rec(&a)).unwrap().iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(), ["w", "x", "y"]);
        // A new cluster starts with the index.
        let fresh = MapState::default();
        let cluster = ClusterRecord {
            cluster_id: "c".into(),
            ca_cert_pem: String::new(),
            ca_key_pem: String::new(),
            token_signing_key_pem: String::new(),
            created_at_ms: 0,
        };
        assert_eq!(fresh.run(MetaCommand::Bootstrap(cluster)), MetaResponse::Done);
        assert!(fresh.get_raw(keys::BLOB_REPO_INDEX).unwrap().is_some());
    }

    /// The reconciler's full pass reads the blob records a page at a time:
    /// every record once, in digest order, across page boundaries, and
    /// nothing of the key families beside them.
    #[test]
    fn every_blob_record_is_read_once_a_page_at_a_time() {
        let s = MapState::default();
        let mut digests: Vec<Digest> = (0..2_500u32).map(|i| Digest::sha256_of(&i.to_be_bytes())).collect();
        for (i, d) in digests.iter().enumerate() {
            s.put(keys::blob(d), &BlobRecord::new(i as u64));
            // The index keys of the same digest sort right after the records.
            s.put(keys::blob_repo(d, "a/b"), &1u64);
        }
        s.put(keys::repo("a/b"), &RepositoryRecord::new("a/b", 0));
        digests.sort_by_key(|d| keys::blob(d));
        let mut seen = Vec::new();
        for_each_blob(&s, |d, rec| {
            seen.push((d, rec.size));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), digests.len());
        assert_eq!(seen.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(), digests);
        assert_eq!(blobs(&s).unwrap().len(), digests.len());
    }
}
