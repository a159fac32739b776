//! The leader's rules for writes, against real nodes in one process: a
//! member can no longer commit whatever it likes by forwarding it, and a
//! client deleted on the leader cannot write through a node that lags.
//!
//! A follower's `MetaNodeHandle::write` sends exactly the envelope a
//! compromised member could (any actor, any command) over the real peer
//! service, so these are the calls such a member would make.

mod common;

use std::time::Duration;

use berth_gateway::ErrorCode;
use berth_raft::command::{IdentityCommand, OrgRecord, RobotRecord};
use berth_raft::command::{MetaCommand, MetaResponse, NodeRecord, RepositoryRecord, UserRecord};
use berth_raft::state::keys;
use berth_raft::{Actor, ClientAccount, MetaError, StateRead};
use common::*;

const T: Duration = Duration::from_secs(20);

fn refused(r: Result<MetaResponse, MetaError>) -> String {
    match r {
        Err(MetaError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn superuser(name: &str) -> MetaCommand {
    MetaCommand::PutUser(user(name, true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cannot_forward_what_no_client_could_make() {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let mut others = c.nodes.keys().copied().filter(|id| *id != leader);
    let (f, victim) = (others.next().unwrap(), others.next().unwrap());
    let follower = &c.node(f).meta;
    let digest = push(c.node(leader), "team/app", "v1", 1).await;
    c.node(leader).meta.write(Actor::OPERATOR, MetaCommand::Identity(IdentityCommand::CreateUser(user("alice", false)))).await.unwrap();
    wait_for(|| follower.state().get_raw(&keys::user("alice")).unwrap().is_some()).await;

    // A superuser made by the node itself, or for a user who is not one.
    let why = refused(follower.write(Actor::Node, superuser("mallory")).await);
    assert!(why.contains("not a superuser") || why.contains("may not make"), "{why}");
    refused(follower.write(Actor::Client(ClientAccount::User("alice".into())), superuser("alice")).await);
    // A node removed, by a node.
    refused(follower.write(Actor::Node, MetaCommand::RemoveNode { node: victim }).await);
    // Another node said to hold a blob, by the node or for a client.
    let other_holds = MetaCommand::AddBlobHolder { digest: digest.clone(), size: 1, node: victim };
    assert!(refused(follower.write(Actor::Node, other_holds.clone()).await).contains(&format!("node {victim}")));
    refused(follower.write(Actor::OPERATOR, other_holds).await);
    // The leader judges its own submissions by the same rules.
    refused(c.node(leader).meta.write(Actor::Node, superuser("mallory")).await);

    // Nothing changed.
    let state = c.node(leader).meta.state();
    assert!(state.get::<UserRecord>(&keys::user("mallory")).unwrap().is_none());
    assert!(!state.get::<UserRecord>(&keys::user("alice")).unwrap().unwrap().superuser);
    assert!(!state.get::<NodeRecord>(&keys::node(victim)).unwrap().unwrap().removed);

    // What the rules allow still goes through a follower: the node's own
    // holding, and a superuser made by the operator.
    // (The blob has no record yet: the state machine, not the rules, says so.)
    let own = follower.write(Actor::Node, MetaCommand::AddBlobHolder { digest, size: 1, node: f }).await;
    assert_eq!(own.expect("a node's own holding is not refused"), MetaResponse::NotFound);
    assert_eq!(follower.write(Actor::OPERATOR, superuser("root2")).await.unwrap(), MetaResponse::Done);

    // A refusal reaches the client as a 403, not a 500.
    let e = berth_node::errors::meta_err(MetaError::Refused("no".into()));
    assert_eq!(e.code, ErrorCode::Denied);
    assert_eq!(e.code.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_robot_deleted_on_the_leader_cannot_write_through_a_lagging_follower() {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let f = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let follower = &c.node(f).meta;
    let admin = &c.node(leader).meta;
    let org = OrgRecord { name: "acme".into(), email: None, created_at_ms: 1 };
    admin.write(Actor::OPERATOR, MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: None })).await.unwrap();
    let robot = RobotRecord { namespace: "acme".into(), short: "ci".into(), description: String::new(), secret_sha256: "00".into(), created_at_ms: 1 };
    admin.write(Actor::OPERATOR, MetaCommand::Identity(IdentityCommand::PutRobot(robot))).await.unwrap();
    let ci = Actor::Client(ClientAccount::Robot("acme+ci".into()));
    let create = |name: &str| MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new(name, 2)));

    // While the robot exists, its writes go through the follower.
    assert_eq!(follower.write(ci.clone(), create("acme/first")).await.unwrap(), MetaResponse::Done);

    // The follower stops hearing the leader (it can still call it), and
    // the robot is deleted meanwhile: the follower still knows it.
    c.filter.cut_one_way(leader, f);
    admin.write(Actor::OPERATOR, MetaCommand::Identity(IdentityCommand::DeleteRobot { namespace: "acme".into(), short: "ci".into() })).await.unwrap();
    assert!(follower.state().get_raw(&keys::robot("acme", "ci")).unwrap().is_some(), "the follower has not applied the deletion");

    let why = refused(follower.write(ci, create("acme/second")).await);
    assert!(why.contains("no longer exists"), "{why}");
    c.filter.heal();
    assert!(admin.state().get_raw(&keys::repo("acme/second")).unwrap().is_none(), "nothing was committed");
}

fn user(name: &str, superuser: bool) -> UserRecord {
    UserRecord { name: name.into(), password_hash: "x".into(), superuser, created_at_ms: 1 }
}

async fn wait_for(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A learner keeps no CA key, so it administers nothing: through it, its
/// operator (or anyone it claims to serve) cannot promote it, remove a
/// voter or make a superuser; its clients' pushes and a probe still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_cannot_make_cluster_commands() {
    let mut c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let learner = c.join("edge", None, 1, true).await;
    let node = &c.node(learner).meta;
    wait_for(|| node.state().get_raw(&keys::node(learner)).unwrap().is_some()).await;
    let voter = *c.nodes.keys().find(|id| **id != learner).unwrap();

    let promote = MetaCommand::SetNodeRole { node: learner, role: berth_raft::command::NodeRole::Voter };
    for cmd in [promote, MetaCommand::RemoveNode { node: voter }, superuser("edge-root")] {
        let why = refused(node.write(Actor::OPERATOR, cmd.clone()).await);
        assert!(why.contains(&format!("node {learner} is not a voter")), "{}: {why}", cmd.kind());
        refused(node.write(Actor::Client(ClientAccount::User("admin".into())), cmd).await);
    }
    let state = c.node(voter).meta.state();
    assert!(state.get::<UserRecord>(&keys::user("edge-root")).unwrap().is_none());
    assert!(!state.get::<NodeRecord>(&keys::node(voter)).unwrap().unwrap().removed);
    assert!(!c.node(voter).meta.voters().contains(&learner));

    assert_eq!(node.write(Actor::OPERATOR, MetaCommand::Probe { at_ms: 1 }).await.unwrap(), MetaResponse::Done);
    push(c.node(learner), "edge/app", "v1", 1).await;
    // Through a voter, the same operator command goes through.
    assert_eq!(c.node(voter).meta.write(Actor::OPERATOR, superuser("root2")).await.unwrap(), MetaResponse::Done);
}
