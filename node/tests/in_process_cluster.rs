//! Metadata cluster behaviour with real nodes in one process.

mod common;

use std::time::Duration;

use common::http::reg;
use common::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_commit_fail_over_and_rejoin() {
    let mut c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();

    // A write through a follower is forwarded, and readable there at once.
    let d1 = push(c.node(follower), "team/app", "v1", 1).await;
    assert_eq!(tag_on(c.node(follower), "team/app", "v1"), Some(d1.clone()), "read-your-writes on the node that took the write");
    for n in c.nodes.values() {
        wait_tag(n, "team/app", "v1", &d1, T).await;
    }

    // The leader is lost: a new one is elected and writes resume. While
    // the survivors elect it (which may run past two election timeouts on
    // a loaded machine), neither counts itself out of touch: a majority
    // would vote for it, so it holds every committed change, and the
    // sessions and tokens issued before stay good there.
    c.stop(leader).await;
    let stopped = std::time::Instant::now();
    let survivors: Vec<_> = c.nodes.values().map(|n| n.meta.clone()).collect();
    let watch = tokio::spawn(async move {
        let follows_new = |m: &berth_raft::MetaNodeHandle| m.is_leader() || (m.view().leader.is_some_and(|l| l != leader) && m.last_in_touch() > stopped);
        loop {
            if let Some(m) = survivors.iter().find(|m| m.out_of_touch_since().is_some()) {
                return Some(m.id());
            }
            if survivors.iter().all(follows_new) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let new_leader = c.wait_leader(T).await;
    assert_ne!(new_leader, leader);
    let d2 = push(c.any(), "team/app", "v2", 2).await;
    for n in c.nodes.values() {
        wait_tag(n, "team/app", "v2", &d2, T).await;
    }
    assert_eq!(watch.await.unwrap(), None, "a survivor counted itself out of touch during an ordinary election");

    // The old leader restarts from disk and rejoins as a follower, and
    // the leader and term it finds stay as they are.
    let (settled, term) = (c.wait_leader(T).await, c.node(new_leader).meta.view().term);
    c.restart(leader).await;
    wait_tag(c.node(leader), "team/app", "v2", &d2, T).await;
    assert_eq!(tag_on(c.node(leader), "team/app", "v1"), Some(d1));
    assert_eq!(c.wait_leader(T).await, settled, "the restarted node does not disturb the leader");
    assert_eq!(c.node(settled).meta.view().term, term, "nor its term");
    c.wait_voters(&[1, 2, 3], T).await;
}

/// A follower that fell behind takes the leader's entries no faster than
/// it applies them: openraft queues every committed entry it has not
/// applied in memory, so it never holds more than `unapplied_entries` in
/// its log beyond what it has applied (the leader sends up to 300 at once
/// otherwise), and it still catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_follower_takes_entries_no_faster_than_it_applies_them() {
    let c = Cluster::new(3, berth_raft::MetaConfig { unapplied_entries: 8, ..fast_config() }).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let cut = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.filter.isolate(cut, c.nodes.keys().copied().filter(|id| *id != cut));
    let mut last = None;
    for i in 0..60 {
        last = Some(push(c.node(leader), "lag/app", &format!("t{i}"), i).await);
    }
    let target = c.node(leader).meta.view().last_log_index.unwrap();
    let behind = target - c.node(cut).meta.view().applied_index.unwrap_or(0);
    assert!(behind > 100, "the cut follower is only {behind} entries behind");
    c.filter.heal();
    let (meta, started) = (c.node(cut).meta.clone(), std::time::Instant::now());
    let mut most = 0;
    loop {
        let v = meta.view();
        let (log, applied) = (v.last_log_index.unwrap_or(0), v.applied_index.unwrap_or(0));
        most = most.max(log.saturating_sub(applied));
        if applied >= target {
            break;
        }
        assert!(started.elapsed() < T, "the follower applied {applied} of {target}");
        tokio::task::yield_now().await;
    }
    assert!(most <= 8, "the follower held {most} entries it had not applied");
    assert_eq!(tag_on(c.node(cut), "lag/app", "t59"), last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_partitioned_follower_catches_up_when_healed() {
    let c = Cluster::new(5, fast_config()).await;
    c.wait_voters(&[1, 2, 3, 4, 5], T).await;
    let leader = c.wait_leader(T).await;
    let cut = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.filter.isolate(cut, c.nodes.keys().copied().filter(|id| *id != cut));

    let writer = c.nodes.values().find(|n| n.config.node_id != cut).unwrap();
    let mut last = None;
    for i in 0..20 {
        last = Some(push(writer, "p/q", "latest", i).await);
    }
    let last = last.unwrap();
    // Had the link been open, the leader's next call to the cut node would
    // have carried the writes: wait for one to be made, and dropped.
    let tried = c.filter.refused(leader, cut);
    eventually(T, "the leader calls the cut node after the writes", || async { c.filter.refused(leader, cut) > tried }).await;
    assert_ne!(tag_on(c.node(cut), "p/q", "latest").as_ref(), Some(&last), "an isolated node cannot have seen the writes");
    // The isolated node cannot write either: no leader answers it.
    let refused = c.node(cut).meta.write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::RemoveNode { node: 99 }).await;
    assert!(matches!(refused, Err(berth_raft::MetaError::Unavailable(_))), "{refused:?}");

    c.filter.heal();
    wait_tag(c.node(cut), "p/q", "latest", &last, T).await;
    assert_eq!(c.wait_leader(T).await, c.wait_leader(T).await);
}

/// Pre-vote: a voter cut off from the others never campaigns, so it keeps
/// its term, refuses writes once it finds no majority, and the heal
/// leaves the leader and its term alone (without pre-vote the cut node's
/// raised term would make the leader step down).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healed_cut_leaves_the_leader_and_its_term_alone() {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let term = c.node(leader).meta.view().term;
    let cut = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.filter.isolate(cut, c.nodes.keys().copied().filter(|id| *id != cut));

    eventually(T, "the cut-off node finds it cannot reach a majority", || async { c.node(cut).meta.refuses_writes().is_some() }).await;
    let asked = std::time::Instant::now();
    let refused = c.node(cut).meta.write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::RemoveNode { node: 99 }).await;
    assert!(matches!(refused, Err(berth_raft::MetaError::Unavailable(_))), "{refused:?}");
    assert!(asked.elapsed() < Duration::from_secs(1), "refused at once, not after the write timeout: {:?}", asked.elapsed());

    // The majority keeps writing while the cut lasts many election timeouts
    // (fast_config: a campaign is due 0.75-0.9 s after the last heartbeat).
    let writer = c.node(leader);
    let mut last = None;
    for i in 0..10 {
        last = Some(push(writer, "p/q", "latest", i).await);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let last = last.unwrap();
    assert_eq!(c.node(cut).meta.view().term, term, "a cut-off voter does not raise its term");

    // The leader and term the heal must leave alone: those of the majority
    // now (a stall of the busy machine may have made it elect again,
    // which is not what this test is about).
    let leader = c.wait_leader(T).await;
    let term = c.node(leader).meta.view().term;
    c.filter.heal();
    wait_tag(c.node(cut), "p/q", "latest", &last, T).await;
    eventually(T, "the healed node takes writes again", || async { c.node(cut).meta.refuses_writes().is_none() }).await;
    assert_eq!(c.wait_leader(T).await, leader, "the heal did not unseat the leader");
    for (id, n) in &c.nodes {
        assert_eq!(n.meta.view().term, term, "node {id}'s term after the heal");
    }
}

/// Check-quorum: a leader cut off from the others stops claiming to lead
/// and refuses writes at once, while the majority elects another leader;
/// after the heal it follows that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_leader_stops_claiming_to_lead() {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let old = c.wait_leader(T).await;
    c.filter.isolate(old, c.nodes.keys().copied().filter(|id| *id != old));

    eventually(T, "the cut-off leader no longer names itself", || async { c.node(old).meta.view().leader != Some(old) }).await;
    assert!(c.node(old).meta.leader_view().await.is_err(), "it answers no leader's view either");
    let asked = std::time::Instant::now();
    let refused = c.node(old).meta.write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::RemoveNode { node: 99 }).await;
    assert!(matches!(refused, Err(berth_raft::MetaError::Unavailable(_))), "{refused:?}");
    assert!(asked.elapsed() < Duration::from_secs(1), "refused at once, not after the write timeout: {:?}", asked.elapsed());

    let other = *c.nodes.keys().find(|id| **id != old).unwrap();
    // Should this ever time out, say what each node believed.
    let deadline = std::time::Instant::now() + T;
    let new = loop {
        if let Some(l) = c.node(other).meta.view().leader.filter(|l| *l != old) {
            break l;
        }
        if std::time::Instant::now() > deadline {
            let views: Vec<String> = c.nodes.iter().map(|(id, n)| format!("node {id}: leading {} {:?}", n.meta.is_leader(), n.meta.view())).collect();
            panic!("the majority elected no new leader within {T:?}:\n{}", views.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let d = push(c.node(other), "p/q", "after", 1).await;

    c.filter.heal();
    wait_tag(c.node(old), "p/q", "after", &d, T).await;
    eventually(T, "the old leader follows the new one", || async { c.node(old).meta.view().leader == Some(new) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_node_catches_up_through_a_snapshot() {
    let mut config = fast_config();
    config.snapshot_after_entries = 10;
    config.keep_entries_after_snapshot = 0;
    let mut c = Cluster::new(3, config).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let mut last = None;
    for i in 0..40 {
        last = Some(push(c.any(), "snap/repo", &format!("t{}", i % 5), i).await);
    }
    let last = last.unwrap();
    // Let the leader build a snapshot and purge the log behind it.
    let leader = c.wait_leader(T).await;
    let deadline = tokio::time::Instant::now() + T;
    while c.node(leader).meta.view().purged_index.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "leader never purged its log");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let late = c.add_node("region-2").await;
    wait_tag(c.node(late), "snap/repo", "t4", &last, T).await;
    assert!(c.node(late).meta.view().snapshot_index.is_some(), "the late node was brought up by a snapshot, not by the (purged) log");
    for i in 0..5 {
        let tag = format!("t{i}");
        assert_eq!(tag_on(c.node(late), "snap/repo", &tag), tag_on(c.node(leader), "snap/repo", &tag));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_and_re_add_under_a_new_id() {
    let mut c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let victim = 3;
    let addr = c.node(victim).config.peer_advertise.clone();
    let w = c.node(1).meta.write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::RemoveNode { node: victim }).await.unwrap();
    assert_eq!(w, berth_raft::MetaResponse::Done);
    // Two left: the count is kept odd, so one voter and one learner.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let l = c.wait_leader(T).await;
        let v = c.node(l).meta.view();
        if !v.members.contains(&victim) && v.voters.len() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node {victim} never left: {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop(victim).await;
    std::fs::remove_dir_all(&c.dirs[&victim]).unwrap();
    c.dirs.remove(&victim);

    // The same machine joins again: a new id, and a voter once caught up.
    let again = c.add_node("region-3").await;
    assert_ne!(again, victim);
    assert_ne!(c.node(again).config.peer_advertise, addr, "new listener, new address");
    c.wait_voters(&[1, 2, again], T).await;
    let d = push(c.node(again), "re/add", "x", 1).await;
    for n in c.nodes.values() {
        wait_tag(n, "re/add", "x", &d, T).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_restarted_from_disk_keeps_every_committed_entry() {
    let mut c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let mut written = Vec::new();
    for i in 0..30 {
        let tag = format!("t{i}");
        written.push((tag.clone(), push(c.any(), "durable/repo", &tag, i).await));
    }
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for id in &ids {
        c.stop(*id).await;
    }
    for id in &ids {
        c.restart(*id).await;
    }
    c.wait_leader(T).await;
    for n in c.nodes.values() {
        for (tag, d) in &written {
            wait_tag(n, "durable/repo", tag, d, T).await;
        }
    }
    // And the cluster still takes writes.
    let d = push(c.any(), "durable/repo", "after", 99).await;
    wait_tag(c.node(1), "durable/repo", "after", &d, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_transfer_moves_the_leader_where_asked() {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let target = *c.nodes.keys().find(|id| **id != leader).unwrap();
    // Asked through a node that is not the leader.
    let via = c.nodes.values().find(|n| n.config.node_id != leader).unwrap();
    assert_eq!(via.meta.transfer_leader(Some(target)).await.unwrap(), target);
    assert_eq!(c.wait_leader(T).await, target);
    push(c.any(), "after/transfer", "x", 1).await;
}

/// A leader that steps down is in touch as of its last acknowledgement,
/// not as of the last heartbeat it heard before it led. Otherwise a node
/// that led for a while after following would, from the moment it stepped
/// down until it heard the new leader, count itself cut off since before
/// it led, and refuse the tokens and console sessions issued meanwhile (a
/// person's page was signed out by a leadership transfer after a drill).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_steps_down_counts_from_its_last_acknowledgement() {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let first = c.wait_leader(T).await;
    // A node that followed, then leads for three election timeouts.
    let led = *c.nodes.keys().find(|id| **id != first).unwrap();
    let next = *c.nodes.keys().find(|id| **id != first && **id != led).unwrap();
    assert_eq!(c.node(first).meta.transfer_leader(Some(led)).await.unwrap(), led);
    assert_eq!(c.wait_leader(T).await, led);
    tokio::time::sleep(Duration::from_millis(3 * c.config.election_max_ms)).await;
    assert!(c.node(led).meta.out_of_touch_since().is_none(), "a leader with a majority is in touch");

    // It hands over to a node whose calls it cannot hear: it steps down
    // (its own calls learn the new term) and then hears no leader at all.
    c.filter.cut_one_way(next, led);
    c.filter.cut_one_way(first, led);
    let handed = std::time::SystemTime::now();
    let handle = c.node(led).meta.clone();
    tokio::spawn(async move { handle.transfer_leader(Some(next)).await });
    eventually(T, "the new leader", || async { c.node(next).meta.is_leader() }).await;
    eventually(T, "the old leader steps down", || async { !c.node(led).meta.is_leader() }).await;
    // Past two election timeouts since its last acknowledgement, it is out
    // of touch since then, which is after the hand-over began.
    tokio::time::sleep(Duration::from_millis(3 * c.config.election_max_ms)).await;
    let since = c.node(led).meta.out_of_touch_since().expect("hearing nobody, it is out of touch");
    let slack = Duration::from_millis(c.config.heartbeat_ms * 4);
    assert!(since + slack > handed, "out of touch since {:?} before the hand-over began", handed.duration_since(since).unwrap_or_default());
    c.filter.heal();
    eventually(T, "back in touch once it hears the leader", || async { c.node(led).meta.out_of_touch_since().is_none() }).await;
}

/// A removed node keeps a certificate the cluster CA signed; the CA alone
/// must not make it a member. Its calls are refused by name, and the
/// cluster goes on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_is_refused_although_its_certificate_checks_out() {
    let mut c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let victim = 3;
    // The victim pushed a blob before: its blob service is known to the others.
    push(c.node(victim), "before/removal", "x", 1).await;
    // Two blobs kept in nodes 1 and 2's regions only, so the victim (in the
    // third) never holds them unless it fetches them: it may fetch the first
    // while a member, and is refused the second once removed. (Placed on
    // demand, a push's second copy may land on the victim.)
    let elsewhere = berth_raft::command::Placement::Regions(vec!["region-1".into(), "region-2".into()]);
    c.node(1).meta.write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::SetPlacement { namespace: "lazy".into(), placement: elsewhere }).await.unwrap();
    let blobs: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i; 64 << 10]).collect();
    let mut digests = vec![];
    for b in &blobs {
        digests.push(reg(c.node(1)).blob("lazy/app", b).await);
    }
    for d in &digests {
        eventually(T, "the victim knows node 1 holds the blob", || async {
            let state = c.node(victim).meta.state();
            let rec: Option<berth_raft::command::BlobRecord> = berth_raft::StateRead::get(&state, &berth_raft::state::keys::blob(d)).unwrap();
            rec.is_some_and(|b| b.holders.contains(&1))
        })
        .await;
    }
    for d in &digests {
        assert!(c.node(victim).replicator.store().stat(d).await.unwrap().is_none(), "the victim holds {d} before fetching it");
    }
    let fetch = |d: &berth_common::Digest| c.node(victim).replicator.fetch(d, 64 << 10, Some(1));
    fetch(&digests[0]).wait().await.expect("a member fetches from another member");
    c.node(1).meta.write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::RemoveNode { node: victim }).await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        // Still running, still holding its certificate: every write it
        // forwards is refused by name.
        match c.node(victim).meta.write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::Probe { at_ms: 1 }).await {
            Err(e) if e.to_string().contains("was removed from the cluster") => break,
            other => assert!(tokio::time::Instant::now() < deadline, "a removed node's write: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its blob connections are refused too, once every other holder has
    // applied the removal: nodes 1 and 2 still hold the second blob, and
    // will not serve it.
    for id in [1, 2] {
        eventually(T, "the holders have applied the removal", || async { berth_raft::state::node_removed(&c.node(id).meta.state(), victim).unwrap() }).await;
    }
    let refused = fetch(&digests[1]).wait().await;
    assert!(refused.is_err(), "a removed node fetched a blob: {refused:?}");
    assert!(c.node(victim).replicator.store().stat(&digests[1]).await.unwrap().is_none());
    let survivors: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != victim).collect();
    let d = push(c.node(survivors[0]), "after/removal", "y", 2).await;
    for id in &survivors {
        wait_tag(c.node(*id), "after/removal", "y", &d, T).await;
    }
    c.stop(victim).await;
}
