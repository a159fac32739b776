//! The rules of the cluster CA's records: which CA signs, which
//! CAs are trusted, and which CA each node's running certificate is from.
//!
//! The CA's private key is not here. It stays on the voters' disks (the
//! node crate keeps it), so a learner, which gets every record below,
//! never learns it. What is agreed on is public: certificates and their
//! fingerprints (hex SHA-256 of the DER, computed by the proposer; the
//! state machine compares them and parses no certificate).
//!
//! A rotation has two steps. [`CaCommand::StartRotation`] makes a new CA
//! the signer while the previous one stays trusted, and carries the new
//! CA's certificate signed by the previous CA (the cross certificate):
//! nodes send it in their chains, so a node that still trusts only the
//! previous CA accepts a certificate from the new one. Every node then
//! gets a new certificate and restarts on it, in any order, and reports
//! so ([`CaCommand::ReportNodeCa`]). [`CaCommand::FinishRotation`] drops
//! the previous CA, and is refused while any node that is not removed
//! still runs on a certificate from it.
//!
//! Key layout: `a` holds the [`CaTrust`] once the cluster has rotated (a
//! cluster that never did is trusted by `ClusterRecord::ca_cert_pem`
//! alone); `N` + node id holds the fingerprint of the CA that signed the
//! certificate that node runs with.

use berth_common::NodeId;

use super::{keys, Changes, StateError, StateRead};
use crate::command::*;

/// The trust record, if the cluster has ever rotated.
pub fn trust(state: &impl StateRead) -> Result<Option<CaTrust>, StateError> {
    state.get(keys::CA_TRUST)
}

/// The CA node `node` last reported running on.
pub fn node_ca(state: &impl StateRead, node: NodeId) -> Result<Option<String>, StateError> {
    state.get(&keys::node_ca(node))
}

pub fn apply(state: &impl StateRead, ch: &mut Changes, cmd: &CaCommand) -> Result<MetaResponse, StateError> {
    Ok(match cmd {
        CaCommand::StartRotation { current, next, cross_pem, now_ms } => {
            let signing_now = match trust(state)? {
                Some(CaTrust { rotation: Some(r), .. }) => {
                    return Ok(MetaResponse::Refused(format!(
                        "a rotation from CA sha256:{} is under way; finish it first (`berth cluster ca rotate --finish`)",
                        r.previous.fingerprint
                    )))
                }
                Some(t) => t.signing.pem,
                None => match state.get::<ClusterRecord>(keys::CLUSTER)? {
                    Some(c) => c.ca_cert_pem,
                    None => return Ok(MetaResponse::Refused("the cluster is not initialized".into())),
                },
            };
            if signing_now != current.pem {
                return Ok(MetaResponse::Refused("the cluster CA changed meanwhile; try again".into()));
            }
            if next.fingerprint == current.fingerprint {
                return Ok(MetaResponse::Refused("the new CA is the current one".into()));
            }
            let rotation = Rotation { previous: current.clone(), cross_pem: cross_pem.clone(), started_at_ms: *now_ms };
            ch.put(keys::CA_TRUST.to_vec(), &CaTrust { signing: next.clone(), rotation: Some(rotation) });
            MetaResponse::Done
        }
        CaCommand::FinishRotation => match trust(state)? {
            Some(CaTrust { signing, rotation: Some(_) }) => {
                let behind = nodes_not_on(state, &signing.fingerprint)?;
                if !behind.is_empty() {
                    let list = behind.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
                    return Ok(MetaResponse::Refused(format!(
                        "node(s) {list} still run with a certificate from the previous CA; restart them (their new certificate is on disk) and try again"
                    )));
                }
                ch.put(keys::CA_TRUST.to_vec(), &CaTrust { signing, rotation: None });
                MetaResponse::Done
            }
            _ => MetaResponse::Refused("no CA rotation is under way".into()),
        },
        CaCommand::ReportNodeCa { node, fingerprint } => {
            if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(MetaResponse::Refused("a CA fingerprint is 64 hex digits".into()));
            }
            match state.get::<NodeRecord>(&keys::node(*node))? {
                Some(rec) if !rec.removed => {
                    ch.put(keys::node_ca(*node), fingerprint);
                    MetaResponse::Done
                }
                _ => MetaResponse::NotFound,
            }
        }
        CaCommand::ForgetLegacyKey => match state.get::<ClusterRecord>(keys::CLUSTER)? {
            Some(mut c) if !c.ca_key_pem.is_empty() => {
                c.ca_key_pem.clear();
                ch.put(keys::CLUSTER.to_vec(), &c);
                MetaResponse::Done
            }
            _ => MetaResponse::Done,
        },
    })
}

/// Nodes, not removed, whose last report is not `fingerprint`.
fn nodes_not_on(state: &impl StateRead, fingerprint: &str) -> Result<Vec<NodeId>, StateError> {
    let mut behind = Vec::new();
    for node in state.scan::<NodeRecord>(keys::NODE_PREFIX)? {
        if !node.removed && node_ca(state, node.id)?.as_deref() != Some(fingerprint) {
            behind.push(node.id);
        }
    }
    Ok(behind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{MetaCommand, NodeRegistration, NodeRole};
    use crate::state::MemState as Mem;

    fn ca(n: u8) -> CaCert {
        CaCert { pem: format!("pem {n}"), fingerprint: format!("{n:02x}").repeat(32) }
    }

    fn cluster(s: &Mem) {
        let rec = ClusterRecord {
            cluster_id: "c".into(),
            ca_cert_pem: ca(1).pem,
            ca_key_pem: "legacy key".into(),
            token_signing_key_pem: "k".into(),
            created_at_ms: 0,
        };
        assert_eq!(s.run(MetaCommand::Bootstrap(rec)), MetaResponse::Done);
        for addr in ["a:1", "b:1"] {
            let registration = NodeRegistration { region: "r".into(), peer_addr: addr.into(), http_addr: addr.into(), role: NodeRole::Auto };
            assert!(matches!(s.run(MetaCommand::RegisterNode { registration, token: None, now_ms: 0 }), MetaResponse::NodeId(_)));
        }
    }

    fn run(s: &Mem, c: CaCommand) -> MetaResponse {
        s.run(MetaCommand::Ca(c))
    }

    #[test]
    fn a_rotation_finishes_only_when_every_node_runs_on_the_new_ca() {
        let s = Mem::default();
        cluster(&s);
        let start = |current: CaCert, next: CaCert| CaCommand::StartRotation { current, next, cross_pem: "cross".into(), now_ms: 5 };
        assert!(matches!(run(&s, start(ca(9), ca(2))), MetaResponse::Refused(w) if w.contains("changed")), "a stale view of the CA");
        assert!(matches!(run(&s, start(ca(1), ca(1))), MetaResponse::Refused(_)), "the same CA again");
        assert!(matches!(run(&s, CaCommand::FinishRotation), MetaResponse::Refused(w) if w.contains("no CA rotation")));
        assert_eq!(run(&s, start(ca(1), ca(2))), MetaResponse::Done);
        assert!(matches!(run(&s, start(ca(2), ca(3))), MetaResponse::Refused(w) if w.contains("under way")), "one rotation at a time");
        let t = trust(&s).unwrap().unwrap();
        assert_eq!((t.signing, t.rotation.unwrap().previous), (ca(2), ca(1)));

        assert_eq!(run(&s, CaCommand::ReportNodeCa { node: 1, fingerprint: ca(2).fingerprint }), MetaResponse::Done);
        assert_eq!(run(&s, CaCommand::ReportNodeCa { node: 2, fingerprint: ca(1).fingerprint }), MetaResponse::Done);
        assert!(matches!(run(&s, CaCommand::FinishRotation), MetaResponse::Refused(w) if w.contains("node(s) 2 ")));
        assert_eq!(run(&s, CaCommand::ReportNodeCa { node: 9, fingerprint: ca(2).fingerprint }), MetaResponse::NotFound);
        assert!(matches!(run(&s, CaCommand::ReportNodeCa { node: 2, fingerprint: "zz".into() }), MetaResponse::Refused(_)));
        assert_eq!(run(&s, CaCommand::ReportNodeCa { node: 2, fingerprint: ca(2).fingerprint }), MetaResponse::Done);
        assert_eq!(run(&s, CaCommand::FinishRotation), MetaResponse::Done);
        assert_eq!(trust(&s).unwrap().unwrap(), CaTrust { signing: ca(2), rotation: None });
        // The next rotation starts from the CA that signs now.
        assert_eq!(run(&s, start(ca(2), ca(3))), MetaResponse::Done);
    }

    #[test]
    fn a_removed_node_does_not_hold_a_rotation_back() {
        let s = Mem::default();
        cluster(&s);
        run(&s, CaCommand::StartRotation { current: ca(1), next: ca(2), cross_pem: "x".into(), now_ms: 0 });
        run(&s, CaCommand::ReportNodeCa { node: 1, fingerprint: ca(2).fingerprint });
        assert_eq!(s.run(MetaCommand::RemoveNode { node: 2 }), MetaResponse::Done);
        assert_eq!(run(&s, CaCommand::FinishRotation), MetaResponse::Done);
    }

    #[test]
    fn the_legacy_key_is_forgotten_and_only_it() {
        let s = Mem::default();
        cluster(&s);
        assert_eq!(run(&s, CaCommand::ForgetLegacyKey), MetaResponse::Done);
        let c: ClusterRecord = s.get(keys::CLUSTER).unwrap().unwrap();
        assert_eq!((c.ca_key_pem.as_str(), c.ca_cert_pem.as_str(), c.token_signing_key_pem.as_str()), ("", "pem 1", "k"));
        assert_eq!(run(&s, CaCommand::ForgetLegacyKey), MetaResponse::Done, "idempotent");
    }
}
