//! What the metadata plane agrees on: commands, their responses, and the
//! records they leave in the state machine.
//!
//! Every command is deterministic: anything that depends on the clock or on
//! randomness (timestamps, generated secrets) is decided by the proposer and
//! carried inside the command, so every replica applies the same bytes to the
//! same state. Commands that race carry a condition and fail cleanly with
//! [`MetaResponse::Conflict`] or [`MetaResponse::Refused`] when it does not
//! hold; a refused command changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use berth_common::{Digest, NodeId};
use serde::{Deserialize, Serialize};

/// The payload of a Raft log entry. The variant is the command format
/// version: a new format is a new variant, and old entries stay readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaRequest {
    V1(MetaCommand),
}

impl From<MetaCommand> for MetaRequest {
    fn from(c: MetaCommand) -> Self {
        MetaRequest::V1(c)
    }
}

impl std::fmt::Display for MetaRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaRequest::V1(c) => write!(f, "v1:{}", c.kind()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// The first command of a cluster: its identity and keys. Refused once
    /// the cluster exists.
    Bootstrap(ClusterRecord),
    /// A node asks to be part of the cluster. With a join token, the token
    /// is checked and its use counted in the same step, so two nodes cannot
    /// race past a one-use token. The response is the assigned node id.
    RegisterNode {
        registration: NodeRegistration,
        token: Option<TokenProof>,
        now_ms: u64,
    },
    /// The operator's wish for a node's role; the leader's membership
    /// reconciler makes it so.
    SetNodeRole {
        node: NodeId,
        role: NodeRole,
    },
    /// Marks a node removed: it leaves the membership and its id is never
    /// reused.
    RemoveNode {
        node: NodeId,
    },
    CreateJoinToken(JoinTokenRecord),
    RevokeJoinToken {
        id: String,
    },
    /// Sets a user's record (password, superuser), creating it if needed.
    PutUser(UserRecord),
    /// Organizations, teams, robots, tokens, permissions, audit records.
    Identity(crate::identity::IdentityCommand),
    /// Creates a repository if it does not exist yet.
    CreateRepository(RepositoryRecord),
    /// Stores a manifest, creates its repository if needed, and points
    /// `tag` at it, in one step: a push is never half visible.
    PutManifest {
        record: ManifestRecord,
        tag: Option<String>,
    },
    /// Deletes a manifest and every tag pointing at it.
    DeleteManifest {
        repo: String,
        digest: Digest,
    },
    /// Points a tag at a manifest. With `if_current`, only when the tag
    /// still points where the caller last saw it (`None` inside: absent).
    SetTag {
        repo: String,
        tag: String,
        digest: Digest,
        pushed_at_ms: u64,
        if_current: Option<Option<Digest>>,
    },
    DeleteTag {
        repo: String,
        tag: String,
        if_current: Option<Digest>,
    },
    AddBlobHolder {
        digest: Digest,
        size: u64,
        node: NodeId,
    },
    /// Makes a blob part of a repository (upload or mount) and records that
    /// `node` holds a copy.
    LinkBlob {
        repo: String,
        digest: Digest,
        size: u64,
        node: NodeId,
        now_ms: u64,
    },
    /// Changes nothing: a write that proves the metadata takes writes
    /// (`berth drill`).
    Probe {
        at_ms: u64,
    },
    /// Where a namespace's blobs are kept.
    SetPlacement {
        namespace: String,
        placement: Placement,
    },
    /// Garbage collection: forgets a blob that no manifest references and
    /// that no repository linked after `cutoff_ms`, all in one step; refused
    /// if a push got to it meanwhile. Nodes then delete their copies.
    SweepBlob {
        digest: Digest,
        cutoff_ms: u64,
    },
    UnlinkBlob {
        repo: String,
        digest: Digest,
    },
    RemoveBlobHolder {
        digest: Digest,
        node: NodeId,
    },
    /// The cluster CA's trust and rotation (see [`crate::ca`]).
    Ca(crate::ca::CaCommand),
}

impl MetaCommand {
    /// A short name for logs; never the payload, which may hold secrets.
    pub fn kind(&self) -> &'static str {
        match self {
            MetaCommand::Bootstrap(_) => "bootstrap",
            MetaCommand::RegisterNode { .. } => "register_node",
            MetaCommand::SetNodeRole { .. } => "set_node_role",
            MetaCommand::RemoveNode { .. } => "remove_node",
            MetaCommand::CreateJoinToken(_) => "create_join_token",
            MetaCommand::RevokeJoinToken { .. } => "revoke_join_token",
            MetaCommand::PutUser(_) => "put_user",
            MetaCommand::Identity(c) => c.kind(),
            MetaCommand::CreateRepository(_) => "create_repository",
            MetaCommand::PutManifest { .. } => "put_manifest",
            MetaCommand::DeleteManifest { .. } => "delete_manifest",
            MetaCommand::SetTag { .. } => "set_tag",
            MetaCommand::DeleteTag { .. } => "delete_tag",
            MetaCommand::AddBlobHolder { .. } => "add_blob_holder",
            MetaCommand::LinkBlob { .. } => "link_blob",
            MetaCommand::UnlinkBlob { .. } => "unlink_blob",
            MetaCommand::SweepBlob { .. } => "sweep_blob",
            MetaCommand::SetPlacement { .. } => "set_placement",
            MetaCommand::Probe { .. } => "probe",
            MetaCommand::RemoveBlobHolder { .. } => "remove_blob_holder",
            MetaCommand::Ca(c) => c.kind(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    Done,
    /// The id given to a registered node.
    NodeId(NodeId),
    /// The command's precondition did not hold; the reason is for people.
    Refused(String),
    /// A conditional tag write lost a race; `current` is what the tag holds.
    Conflict {
        current: Option<Digest>,
    },
    NotFound,
}

/// The cluster's identity and the key that signs registry tokens,
/// replicated so that any node can issue and verify tokens.
///
/// `ca_cert_pem` is the CA the cluster was made with (see [`crate::ca`] for
/// the CA after a rotation). The CA's private key is kept by the voters on
/// their disks; `ca_key_pem` is empty, except in clusters made before that,
/// whose leader clears it ([`crate::ca::CaCommand::ForgetLegacyKey`]) once
/// it holds the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub cluster_id: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// Private key (PKCS#8 PEM) that signs registry tokens.
    pub token_signing_key_pem: String,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// Voter when caught up, unless that would make the voter count even.
    Auto,
    /// Always a voter once caught up (operator's `promote`).
    Voter,
    /// Never a voter (`--learner`, operator's `demote`): edge regions.
    Learner,
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeRole::Auto => "auto",
            NodeRole::Voter => "voter",
            NodeRole::Learner => "learner",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub region: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub role: NodeRole,
}

/// The longest address a node may register: a DNS name (253) with a port,
/// or a URL around one, with room to spare.
pub const MAX_NODE_ADDR_LEN: usize = 512;

impl NodeRegistration {
    /// Checks the shape of every field. A registration is stored by every
    /// node and shown by every status call for the cluster's lifetime, so
    /// it must be small and printable whoever sent it.
    pub fn validate(&self) -> Result<(), String> {
        if self.region.parse::<berth_common::Region>().is_err() {
            return Err("region must be 1 to 63 lowercase letters, digits and dashes, starting with a letter".into());
        }
        for (what, addr) in [("peer address", &self.peer_addr), ("http address", &self.http_addr)] {
            if addr.is_empty() || addr.len() > MAX_NODE_ADDR_LEN || !addr.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("{what} must be 1 to {MAX_NODE_ADDR_LEN} printable ASCII characters without spaces"));
            }
        }
        Ok(())
    }
}

/// A joining node's proof: the token id and the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenProof {
    pub id: String,
    pub secret_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub region: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub role: NodeRole,
    pub removed: bool,
    pub joined_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    /// Hex SHA-256 of the secret; the secret itself is never stored.
    pub secret_sha256: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub revoked: bool,
    pub uses: u32,
    /// `None`: any number of joins until it expires or is revoked.
    pub max_uses: Option<u32>,
}

impl JoinTokenRecord {
    /// Why `proof` may not join a node at `now_ms`, or `None` if it may.
    /// The state machine decides with this when it counts a use; a seed
    /// asks it first, so a wrong token never becomes a log entry.
    pub fn refusal(&self, proof: &TokenProof, now_ms: u64) -> Option<&'static str> {
        if self.secret_sha256 != proof.secret_sha256 {
            Some("join token secret is wrong")
        } else if self.revoked {
            Some("join token was revoked")
        } else if now_ms >= self.expires_at_ms {
            Some("join token has expired")
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            Some("join token has been used up")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub superuser: bool,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryRecord {
    pub name: String,
    pub public: bool,
    pub created_at_ms: u64,
    pub description: String,
    /// Roles of users and robots (`ns+short`).
    pub users: BTreeMap<String, crate::identity::Role>,
    /// Roles of teams of the repository's organization.
    pub teams: BTreeMap<String, crate::identity::Role>,
}

impl RepositoryRecord {
    /// A private repository with no grants.
    pub fn new(name: &str, now_ms: u64) -> RepositoryRecord {
        RepositoryRecord {
            name: name.to_string(),
            public: false,
            created_at_ms: now_ms,
            description: String::new(),
            users: BTreeMap::new(),
            teams: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub repo: String,
    pub digest: Digest,
    pub media_type: String,
    /// As bytes, not a sequence of u8: the same encoding, written and read
    /// in one copy instead of one call per byte (a 4 MiB manifest).
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// Blobs (config and layers) this manifest references.
    pub blobs: Vec<Digest>,
    /// Child manifests (of an index).
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    pub pushed_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: Digest,
    pub pushed_at_ms: u64,
}

/// Which nodes keep a copy of a namespace's blobs in the background.
/// Whatever the policy, any node can serve any blob (fetching on a miss),
/// and a push waits for `min_copies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Placement {
    /// Every node of every region (the default).
    #[default]
    Everywhere,
    /// Every node of these regions.
    Regions(Vec<String>),
    /// Only where it was pushed (and min_copies), and wherever it is pulled.
    OnDemand,
}

impl Placement {
    pub fn wants(&self, region: &str) -> bool {
        match self {
            Placement::Everywhere => true,
            Placement::Regions(r) => r.iter().any(|x| x == region),
            Placement::OnDemand => false,
        }
    }
}

/// A blob's membership in a repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobLink {
    pub size: u64,
    pub linked_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    /// Nodes with a verified copy.
    pub holders: BTreeSet<NodeId>,
    /// Manifests (in any repository) that reference the blob.
    pub refs: u64,
    /// Repositories the blob is linked into, and when it was last linked.
    pub repos: BTreeMap<String, u64>,
}

impl BlobRecord {
    pub fn new(size: u64) -> BlobRecord {
        BlobRecord { size, holders: BTreeSet::new(), refs: 0, repos: BTreeMap::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serde_bytes` on a manifest's bytes must not change the stored
    /// form: records written before it are read by it and the other way.
    #[test]
    fn manifest_bytes_encode_as_a_plain_sequence_did() {
        #[derive(Serialize)]
        struct Before<'a> {
            repo: &'a str,
            digest: &'a Digest,
            media_type: &'a str,
            bytes: &'a Vec<u8>,
            blobs: Vec<Digest>,
            children: Vec<Digest>,
            subject: Option<Digest>,
            pushed_at_ms: u64,
        }
        let digest = Digest::sha256_of(b"m");
        let rec = ManifestRecord {
            repo: "a/b".into(),
            digest: digest.clone(),
            media_type: "t".into(),
            bytes: (0..=255u8).collect(),
            blobs: vec![],
            children: vec![],
            subject: None,
            pushed_at_ms: 7,
        };
        let before =
            Before { repo: "a/b", digest: &digest, media_type: "t", bytes: &rec.bytes, blobs: vec![], children: vec![], subject: None, pushed_at_ms: 7 };
        let old = berth_common::encode_versioned(1, &before).unwrap();
        assert_eq!(berth_common::encode_versioned(1, &rec).unwrap(), old);
        assert_eq!(berth_common::decode_versioned::<ManifestRecord>(1, &old).unwrap(), rec);
    }

    mod properties {
        use super::*;
        use berth_common::{decode_versioned, encode_versioned};
        use proptest::prelude::*;

        use crate::state::RECORD_VERSION;

        fn digest() -> impl Strategy<Value = Digest> {
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| Digest::sha256_of(&b))
        }

        fn role() -> impl Strategy<Value = NodeRole> {
            prop_oneof![Just(NodeRole::Auto), Just(NodeRole::Voter), Just(NodeRole::Learner)]
        }

        fn manifest() -> impl Strategy<Value = ManifestRecord> {
            (
                ".{0,40}",
                digest(),
                ".{0,60}",
                proptest::collection::vec(any::<u8>(), 0..512),
                proptest::collection::vec(digest(), 0..6),
                proptest::collection::vec(digest(), 0..3),
                proptest::option::of(digest()),
                any::<u64>(),
            )
                .prop_map(|(repo, digest, media_type, bytes, blobs, children, subject, pushed_at_ms)| ManifestRecord {
                    repo,
                    digest,
                    media_type,
                    bytes,
                    blobs,
                    children,
                    subject,
                    pushed_at_ms,
                })
        }

        fn node() -> impl Strategy<Value = NodeRecord> {
            (any::<u64>(), ".{0,20}", ".{0,30}", ".{0,30}", role(), any::<bool>(), any::<u64>()).prop_map(
                |(id, region, peer_addr, http_addr, role, removed, joined_at_ms)| NodeRecord { id, region, peer_addr, http_addr, role, removed, joined_at_ms },
            )
        }

        fn blob() -> impl Strategy<Value = BlobRecord> {
            (any::<u64>(), proptest::collection::btree_set(any::<u64>(), 0..6), any::<u64>(), proptest::collection::btree_map(".{0,20}", any::<u64>(), 0..4))
                .prop_map(|(size, holders, refs, repos)| BlobRecord { size, holders, refs, repos })
        }

        /// A few commands of different shapes, as the log stores them.
        fn command() -> impl Strategy<Value = MetaRequest> {
            prop_oneof![
                (manifest(), proptest::option::of(".{0,20}")).prop_map(|(record, tag)| MetaCommand::PutManifest { record, tag }),
                (any::<u64>(), role()).prop_map(|(node, role)| MetaCommand::SetNodeRole { node, role }),
                (digest(), any::<u64>()).prop_map(|(digest, cutoff_ms)| MetaCommand::SweepBlob { digest, cutoff_ms }),
                (".{0,20}", ".{0,20}", digest(), any::<u64>(), proptest::option::of(proptest::option::of(digest())))
                    .prop_map(|(repo, tag, digest, pushed_at_ms, if_current)| MetaCommand::SetTag { repo, tag, digest, pushed_at_ms, if_current }),
            ]
            .prop_map(MetaRequest::from)
        }

        fn round_trips<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) -> Result<(), TestCaseError> {
            let bytes = encode_versioned(RECORD_VERSION, v).unwrap();
            prop_assert_eq!(&decode_versioned::<T>(RECORD_VERSION, &bytes).unwrap(), v);
            // A record of another version is refused, not misread.
            prop_assert!(decode_versioned::<T>(RECORD_VERSION + 1, &bytes).is_err());
            Ok(())
        }

        // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
        proptest! {
            #[test]
            fn stored_records_round_trip(m in manifest(), n in node(), b in blob(), t in (digest(), any::<u64>())) {
                round_trips(&m)?;
                round_trips(&n)?;
                round_trips(&b)?;
                round_trips(&TagRecord { digest: t.0, pushed_at_ms: t.1 })?;
            }

            #[test]
            fn logged_commands_round_trip(c in command()) {
                round_trips(&c)?;
            }
        }
    }
}
