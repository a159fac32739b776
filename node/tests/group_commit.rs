//! Group commit against real nodes in one process: the leader puts writes
//! that arrive together into one Raft entry only once every member has
//! said it reads such entries, each write keeps its own answer, and every
//! node ends with the same state.

mod common;

use std::time::Duration;

use berth_raft::command::{IdentityCommand, MetaCommand, MetaResponse, UserRecord};
use berth_raft::state::keys;
use berth_raft::{Actor, StateRead};
use common::*;

const T: Duration = Duration::from_secs(20);
/// Names created at once, and writers racing to create each.
const NAMES: usize = 8;
const RACERS: usize = 8;

fn create(name: &str) -> MetaCommand {
    MetaCommand::Identity(IdentityCommand::CreateUser(UserRecord { name: name.into(), password_hash: "h".into(), superuser: false, created_at_ms: 1 }))
}

/// `NAMES x RACERS` writers at once, half through the leader and half
/// through `follower`, each racing `RACERS - 1` others to create the same
/// user: exactly one of them creates it, the others are told the name is
/// taken, whether or not they shared an entry.
async fn race(c: &Cluster, leader: u64, follower: u64, prefix: &str) {
    let writes = (0..NAMES * RACERS).map(|i| {
        let node = if i % 2 == 0 { leader } else { follower };
        let name = format!("{prefix}{}", i % NAMES);
        let meta = c.node(node).meta.clone();
        async move { (name.clone(), meta.write(Actor::OPERATOR, create(&name)).await) }
    });
    let results = futures::future::join_all(writes).await;
    for n in 0..NAMES {
        let name = format!("{prefix}{n}");
        let answers: Vec<&MetaResponse> = results.iter().filter(|(who, _)| *who == name).map(|(_, r)| r.as_ref().expect("every write commits")).collect();
        assert_eq!(answers.iter().filter(|r| ***r == MetaResponse::Done).count(), 1, "{name} is created once: {answers:?}");
        assert!(
            answers.iter().filter(|r| ***r != MetaResponse::Done).all(|r| matches!(r, MetaResponse::Refused(why) if why.contains("is taken"))),
            "the others are told {name} is taken: {answers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_groups_writes_once_every_member_reads_groups_and_each_keeps_its_answer() {
    let mut c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let down = *c.nodes.keys().find(|id| **id != leader).unwrap();

    // A member that has not answered the current leader since it started
    // (here: down; in a rolling upgrade, also one of the previous release,
    // which never says it reads grouped entries) keeps writes one per entry.
    c.stop(down).await;
    let alive: Vec<u64> = c.nodes.keys().copied().collect();
    for id in &alive {
        c.stop(*id).await;
    }
    for id in &alive {
        c.restart(*id).await;
    }
    let leader = c.wait_leader(T).await;
    let follower = *alive.iter().find(|id| **id != leader).unwrap();
    race(&c, leader, follower, "early").await;
    assert_eq!(c.node(leader).meta.grouped_writes(), (0, 0), "no group while a member has not said it reads them");

    // Once it is back and has answered, writes that arrive together share
    // entries.
    c.restart(down).await;
    let mut round = 0;
    eventually(T, "the leader groups writes", || {
        round += 1;
        let (c, r) = (&c, round);
        async move {
            race(c, leader, follower, &format!("r{r}-")).await;
            let (groups, writes) = c.node(leader).meta.grouped_writes();
            (groups > 0).then_some((groups, writes))
        }
    })
    .await;
    let (groups, writes) = c.node(leader).meta.grouped_writes();
    assert!(writes >= 2 * groups, "a group holds at least two writes: {groups} groups, {writes} writes");

    // Every node holds the same users.
    c.sync_all().await;
    let users = |id: u64| c.node(id).meta.state().scan_raw(&keys::user("")).unwrap();
    let on_leader = users(leader);
    assert_eq!(on_leader.len(), 1 + NAMES * (1 + round), "the admin and every name created once");
    for id in c.nodes.keys() {
        assert_eq!(users(*id), on_leader, "node {id} holds what the leader holds");
    }
}
