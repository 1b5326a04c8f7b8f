//! Node-level liveness: idle groups cost nothing, and a lost leader is still
//! replaced within about an election timeout.
//!
//! openraft's failure detection is per group: each leader heartbeats each
//! follower every interval, and a follower that misses them campaigns. With
//! hundreds of tables that is thousands of messages a second doing nothing
//! (`bench idle-tables`). Here instead:
//! - each node sends each peer one beat per heartbeat interval, whatever the
//!   number of groups, with its term and role in every group it runs;
//! - a group's Raft timer runs only on a lone voter, which elects itself,
//!   and on the voters of a group left without a leader for three election
//!   timeouts (openraft's randomized timer as a fallback).
//!   A leader needs no heartbeats: the acks of its writes renew its lease
//!   (and `group.rs` renews a lapsed one with a ReadIndex round before a
//!   write), and openraft's replication retries a follower that fell
//!   behind on its own backoff. Followers never time out on their own;
//! - a voter whose group no live peer claims to lead (at its term or later),
//!   and that a quorum of live voters runs, starts an election, Pre-Vote
//!   first: at once when its leader's node has been silent for an election
//!   timeout, after a third of one otherwise (a new leader's beat may be on
//!   its way). The live voters take turns in an order hashed from the
//!   group, an election timeout apart, so that two followers do not split
//!   the vote;
//! - when a peer is heard from again after it was taken for lost, every
//!   group this node leads replicates to it at once (replication to a lost
//!   peer pauses up to 5 s between attempts, `network.rs`);
//! - a leader that sees a peer at another term, or without a leader at its
//!   own, heartbeats that group (at most once a turn): the peer learns its
//!   leader, or the leader learns that it was replaced.
//!
//! A new group is initialized by one member, the first in its order of
//! turns (`first_turn`), so that first leaderships spread over the nodes;
//! another member initializes it only when that one stays away
//! (`Liveness::initialize_if_abandoned`). That member also takes the
//! leadership back, a few groups per round, once the group has been quiet
//! long enough for its leader's lease to lapse and every voter beats
//! (`Liveness::take_back`), so that a lost node never takes most
//! leaderships with it.
//!
//! A node has at most `ELECTIONS_IN_FLIGHT` elections under way (started
//! within an election timeout, its group still unled). A node opening
//! hundreds of tables while its peers are busy creating theirs gets slow
//! answers: with a cap on elections started per round instead, they piled
//! up, timed out and were sent again (`bench idle-tables`, 1,000 tables: the
//! cluster did not come up with 64 a round; with 8 a round it did, but
//! after a node that led 721 tables was lost the first voter was still
//! working through them when the second voter's turn came, and their
//! elections collided: 4.28 s). Elections that win free their places at
//! once, so a lost node's tables are taken over in a few rounds. With turns
//! a third of an election timeout apart the second voter still came in
//! while the first worked through its queue (877 tables: elections split
//! and retried for five seconds); a whole election timeout apart, the
//! first voter has the time to finish.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regatta_proto::internal::raft::v1::{GroupRole, NodeBeat};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::group::{Group, GroupView, Groups};
use super::network::Peers;
use super::types::{GroupId, NodeId};
use crate::cluster::config::MemberIdentity;

/// Elections a node has under way at most.
const ELECTIONS_IN_FLIGHT: usize = 64;

/// Groups a node takes back per round (`Liveness::take_back`).
const TAKE_BACKS_PER_ROUND: usize = 4;

/// What steering one group did this round.
#[derive(Debug, PartialEq, Eq)]
enum Steered {
    Nothing,
    /// Started an election for a group no live node leads.
    Elected,
    /// Campaigned for a group it prefers to lead.
    TookBack,
}

/// How the node's groups are watched: the three durations below.
#[derive(Debug, Clone, Copy)]
pub struct LivenessTiming {
    /// How often a beat goes to each peer (the heartbeat interval).
    pub beat: Duration,
    /// A peer not heard from for this long is taken for lost (Regatta's
    /// election timeout).
    pub silence: Duration,
    /// How long a group may stay unclaimed while its leader's node still
    /// beats, and the time between two heartbeats a leader sends a peer out
    /// of step. (Voters' turns to campaign are `silence` apart.)
    pub turn: Duration,
}

/// What one peer said in its last beat.
struct Heard {
    at: Instant,
    groups: HashMap<GroupId, (u64, GroupRole)>,
    identity: MemberIdentity,
}

/// The last beat of each peer (its own, or its answer to one of ours).
#[derive(Default)]
struct HeardBeats(Mutex<HashMap<NodeId, Arc<Heard>>>);

impl HeardBeats {
    fn record(&self, beat: NodeBeat) {
        let groups = beat
            .group_ids
            .iter()
            .zip(&beat.terms)
            .zip(&beat.roles)
            .map(|((group, term), role)| {
                let role = GroupRole::try_from(*role).unwrap_or(GroupRole::Leaderless);
                (*group, (*term, role))
            })
            .collect();
        let heard = Arc::new(Heard {
            at: Instant::now(),
            groups,
            identity: MemberIdentity {
                name: beat.name,
                client_url: beat.client_url,
            },
        });
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(beat.from, heard);
    }

    /// How `peer` named itself in its last beat, however long ago.
    fn identity(&self, peer: NodeId) -> Option<MemberIdentity> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .map(|heard| heard.identity.clone())
    }

    /// Peers heard from within `silence`.
    fn live(&self, now: Instant, silence: Duration) -> HashMap<NodeId, Arc<Heard>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, heard)| now.duration_since(heard.at) < silence)
            .map(|(peer, heard)| (*peer, heard.clone()))
            .collect()
    }
}

/// Sends this node's beats, keeps the peers' and steers the groups.
pub struct Liveness {
    self_id: NodeId,
    groups: Arc<Groups>,
    peers: Arc<Peers>,
    timing: LivenessTiming,
    heard: Arc<HeardBeats>,
    /// This node's last beat (`to` unset), also the answer to a peer's.
    last_beat: Mutex<NodeBeat>,
    /// Peers with a beat still unanswered: a lost peer gets one at a time.
    in_flight: Mutex<HashMap<NodeId, Arc<AtomicBool>>>,
    /// Groups whose Raft timer runs, as of the last round.
    timers_running: AtomicUsize,
    /// Elections this node started for lack of a live leader.
    elections_started: AtomicU64,
    /// Elections this node started to lead a group it is first to lead.
    take_backs: AtomicU64,
    /// How this node names itself to clients, sent in every beat.
    identity: MemberIdentity,
}

/// What the loop remembers between two rounds.
#[derive(Default)]
struct Steerings {
    groups: HashMap<GroupId, Steering>,
    /// The peers live at the last round.
    live: HashSet<NodeId>,
}

/// What the loop remembers of one group between two rounds.
struct Steering {
    ticking: Option<bool>,
    /// No heartbeat is sent for a peer out of step before then.
    next_nudge: Instant,
    /// Since when no live peer has claimed the group.
    unclaimed_since: Option<Instant>,
    /// No election is started here before then.
    next_election: Instant,
    /// When this node started an election that has not been decided yet.
    electing_since: Option<Instant>,
    /// This node does not try to take the group back before then.
    next_take_back: Instant,
}

/// What a group's steering may start this round.
#[derive(Clone, Copy)]
struct May {
    elect: bool,
    take_back: bool,
}

impl Liveness {
    pub fn new(
        self_id: NodeId,
        groups: Arc<Groups>,
        peers: Arc<Peers>,
        timing: LivenessTiming,
        identity: MemberIdentity,
    ) -> Arc<Liveness> {
        Arc::new(Liveness {
            self_id,
            groups,
            peers,
            timing,
            heard: Arc::default(),
            last_beat: Mutex::new(NodeBeat {
                from: self_id,
                name: identity.name.clone(),
                client_url: identity.client_url.clone(),
                ..NodeBeat::default()
            }),
            identity,
            in_flight: Mutex::default(),
            timers_running: AtomicUsize::new(0),
            elections_started: AtomicU64::new(0),
            take_backs: AtomicU64::new(0),
        })
    }

    /// Records a peer's beat and answers with this node's last one.
    pub fn receive(&self, beat: NodeBeat) -> NodeBeat {
        let from = beat.from;
        self.heard.record(beat);
        let mut answer = self
            .last_beat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        answer.to = from;
        answer
    }

    /// Runs the rounds until `stop` turns true.
    pub fn spawn(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let liveness = self.clone();
        tokio::spawn(async move {
            let mut steering = Steerings::default();
            let mut rounds = tokio::time::interval(liveness.timing.beat);
            rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = rounds.tick() => liveness.round(&mut steering),
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        })
    }

    /// One round: tell the peers, then steer every group.
    fn round(&self, steerings: &mut Steerings) {
        let now = Instant::now();
        let groups = self.groups.all();
        let views: Vec<GroupView> = groups.iter().map(|g| g.view(self.self_id)).collect();
        self.send_beats(&groups, &views);
        let live = self.heard.live(now, self.timing.silence);
        let returned: Vec<NodeId> = live
            .keys()
            .filter(|peer| !steerings.live.contains(peer))
            .copied()
            .collect();
        steerings.live = live.keys().copied().collect();
        for peer in self.peers.others() {
            self.peers.set_live(peer, live.contains_key(&peer));
        }
        let steering = &mut steerings.groups;
        let mut under_way = steering
            .values()
            .filter(|s| {
                s.electing_since
                    .is_some_and(|since| now.duration_since(since) < self.timing.silence)
            })
            .count();
        // Leaderships are moved back only while no group needs a leader.
        let calm = under_way == 0;
        let mut take_backs = 0;
        let running: HashSet<GroupId> = groups.iter().map(|g| g.id).collect();
        steering.retain(|id, _| running.contains(id));
        for (group, view) in groups.iter().zip(&views) {
            let steer = steering.entry(group.id).or_insert_with(|| Steering {
                ticking: None,
                next_nudge: now,
                unclaimed_since: None,
                next_election: now,
                electing_since: None,
                next_take_back: now,
            });
            if view.role == GroupRole::Leading {
                for peer in &returned {
                    group.reset_backoff_now(*peer);
                }
            }
            let may = May {
                elect: under_way < ELECTIONS_IN_FLIGHT,
                take_back: calm && take_backs < TAKE_BACKS_PER_ROUND,
            };
            match self.steer(group, view, &live, steer, now, may) {
                Steered::Elected => under_way += 1,
                Steered::TookBack => take_backs += 1,
                Steered::Nothing => {}
            }
        }
        let running = steering
            .values()
            .filter(|s| s.ticking == Some(true))
            .count();
        self.timers_running.store(running, Ordering::Relaxed);
    }

    /// How `node` names itself to clients: this node's own settings, a
    /// peer's last beat (`None` for a peer never heard from).
    pub fn identity_of(&self, node: NodeId) -> Option<MemberIdentity> {
        if node == self.self_id {
            return Some(self.identity.clone());
        }
        self.heard.identity(node)
    }

    /// Groups whose Raft timer runs on this node (as of the last round).
    pub fn timers_running(&self) -> usize {
        self.timers_running.load(Ordering::Relaxed)
    }

    /// Elections this node started because no live node led a group.
    pub fn elections_started(&self) -> u64 {
        self.elections_started.load(Ordering::Relaxed)
    }

    /// Elections this node started to take back a group it is first to lead.
    pub fn take_backs(&self) -> u64 {
        self.take_backs.load(Ordering::Relaxed)
    }

    fn send_beats(&self, groups: &[Arc<Group>], views: &[GroupView]) {
        let beat = NodeBeat {
            from: self.self_id,
            to: 0,
            group_ids: groups.iter().map(|g| g.id).collect(),
            terms: views.iter().map(|v| v.term).collect(),
            roles: views.iter().map(|v| v.role as i32).collect(),
            name: self.identity.name.clone(),
            client_url: self.identity.client_url.clone(),
        };
        *self.last_beat.lock().unwrap_or_else(|p| p.into_inner()) = beat.clone();
        for peer in self.peers.others() {
            let busy = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(peer)
                .or_default()
                .clone();
            if busy.swap(true, Ordering::AcqRel) {
                continue;
            }
            let mut beat = beat.clone();
            beat.to = peer;
            let peers = self.peers.clone();
            let timeout = self.timing.silence;
            let answers = self.heard.clone();
            tokio::spawn(async move {
                if let Ok(answer) = peers.beat(peer, beat, timeout).await {
                    if answer.from == peer {
                        answers.record(answer);
                    }
                }
                busy.store(false, Ordering::Release);
            });
        }
    }

    /// Decides one group's timer, and whether to heartbeat or campaign (as
    /// far as `may` lets it).
    fn steer(
        &self,
        group: &Arc<Group>,
        view: &GroupView,
        live: &HashMap<NodeId, Arc<Heard>>,
        steer: &mut Steering,
        now: Instant,
        may: May,
    ) -> Steered {
        let leading = view.role == GroupRole::Leading;
        // A group left without a leader for several election timeouts
        // despite the turns (seen once in 1,000 tables after a node was
        // lost: two voters whose logs and terms disagreed kept defeating
        // each other) falls back on openraft's own randomized election
        // timer until it has a leader again.
        let stuck = !leading
            && steer
                .unclaimed_since
                .is_some_and(|since| now.duration_since(since) >= self.timing.silence * 3);
        let ticking = !leading && view.voter && (view.voters == 1 || stuck);
        if steer.ticking != Some(ticking) {
            group.set_ticking(ticking);
            steer.ticking = Some(ticking);
        }

        if leading {
            steer.unclaimed_since = None;
            steer.electing_since = None;
            let out_of_step = live.values().any(|heard| {
                heard.groups.get(&group.id).is_some_and(|(term, role)| {
                    *term != view.term || *role == GroupRole::Leaderless
                })
            });
            if out_of_step && now >= steer.next_nudge {
                group.heartbeat_now();
                steer.next_nudge = now + self.timing.turn;
            }
            return Steered::Nothing;
        }
        if view.voters == 0 {
            self.initialize_if_abandoned(group, live, steer, now);
            return Steered::Nothing;
        }
        if !view.voter || view.voters == 1 {
            steer.unclaimed_since = None;
            return Steered::Nothing;
        }
        let claimed = live.values().any(|heard| {
            matches!(heard.groups.get(&group.id),
                Some((term, GroupRole::Leading)) if *term >= view.term)
        });
        if claimed {
            steer.unclaimed_since = None;
            steer.electing_since = None;
            if may.take_back && self.take_back(group, view, live, steer, now) {
                return Steered::TookBack;
            }
            return Steered::Nothing;
        }
        let since = *steer.unclaimed_since.get_or_insert(now);
        let leader_silent = view
            .leader
            .is_some_and(|leader| leader != self.self_id && !live.contains_key(&leader));
        let grace = if leader_silent {
            Duration::ZERO
        } else {
            self.timing.turn
        };
        // Voters that can answer a vote: this node, and live peers that run
        // the group (a peer still opening its tables does not). Without a
        // quorum of them an election cannot win: it would only time out.
        let able: Vec<NodeId> = group
            .voters()
            .into_iter()
            .filter(|v| {
                *v == self.self_id
                    || live
                        .get(v)
                        .is_some_and(|heard| heard.groups.contains_key(&group.id))
            })
            .collect();
        if able.len() * 2 <= view.voters {
            return Steered::Nothing;
        }
        let rank = turn_of(group.id, self.self_id, able.into_iter());
        let due = since + grace + self.timing.silence * rank;
        if !may.elect || now < due || now < steer.next_election {
            return Steered::Nothing;
        }
        tracing::info!(group = group.id, term = view.term, ?view.leader, leader_silent,
            "no live node leads the group: starting an election");
        group.elect_now();
        self.elections_started.fetch_add(1, Ordering::Relaxed);
        steer.next_election = now + self.timing.silence * (rank + 1);
        steer.electing_since = Some(now);
        Steered::Elected
    }

    /// Leaderships drift: a busy start, or a node lost and back, leaves one
    /// node leading most groups, and losing it then costs most elections
    /// (`bench idle-tables`, 1,000 tables: one node led 635 to 819 of them
    /// and its loss took 6 s to repair). A follower that is its group's
    /// first choice (`first_turn`: the initializer, a third of the groups
    /// each on three nodes) campaigns, Pre-Vote first, while every voter
    /// beats. Pre-Vote wins only where the leader's lease has lapsed, that
    /// is in a group without writes for a while (`timing.rs`): a busy
    /// group keeps its leader and is tried again ten election timeouts
    /// later.
    fn take_back(
        &self,
        group: &Arc<Group>,
        view: &GroupView,
        live: &HashMap<NodeId, Arc<Heard>>,
        steer: &mut Steering,
        now: Instant,
    ) -> bool {
        if now < steer.next_take_back || view.role != GroupRole::Following {
            return false;
        }
        // Checked again at the next election timeout at the earliest.
        steer.next_take_back = now + self.timing.silence;
        let voters = group.voters();
        let preferred = first_turn(group.id, voters.iter().copied()) == self.self_id;
        let all_beat = voters.iter().all(|v| {
            *v == self.self_id
                || live.get(v).is_some_and(|heard| {
                    heard.groups.get(&group.id).is_some_and(|(term, role)| {
                        *term == view.term && *role != GroupRole::Leaderless
                    })
                })
        });
        if !preferred || !all_beat {
            return false;
        }
        tracing::info!(group = group.id, term = view.term, ?view.leader,
            "taking back the leadership of a group this node is first to lead");
        group.elect_now();
        self.take_backs.fetch_add(1, Ordering::Relaxed);
        steer.next_take_back = now + self.timing.silence * 10;
        true
    }
}

impl Liveness {
    /// A group not initialized here waits for its initializer
    /// (`Group::start`), then for the leader it elects to send the
    /// membership. Only when the initializer is silent for an election
    /// timeout (a table created while that node is down) and no live peer
    /// leads the group is it initialized here. An initializer that beats
    /// is waited for, however long it takes to open the group or to win
    /// it (its own timer takes over when its turns fail): a second
    /// initializer brings back the lopsided leadership that `Group::start`
    /// avoids (`bench idle-tables`, 1,000 tables, when a busy start let
    /// groups go unled for three election timeouts: one node led 819).
    fn initialize_if_abandoned(
        &self,
        group: &Arc<Group>,
        live: &HashMap<NodeId, Arc<Heard>>,
        steer: &mut Steering,
        now: Instant,
    ) {
        let led = live
            .values()
            .any(|heard| matches!(heard.groups.get(&group.id), Some((_, GroupRole::Leading))));
        if led {
            steer.unclaimed_since = None;
            return;
        }
        let since = *steer.unclaimed_since.get_or_insert(now);
        let initializer = group.initializer();
        // This node is the initializer only if initializing failed at start.
        let silent = initializer == self.self_id || !live.contains_key(&initializer);
        if !silent || now.duration_since(since) < self.timing.silence || now < steer.next_election {
            return;
        }
        tracing::info!(
            group = group.id,
            initializer,
            "the group's initializer is away: initializing it here"
        );
        steer.next_election = now + self.timing.silence;
        let group = group.clone();
        tokio::spawn(async move { group.initialize_now().await });
    }
}

/// The member that initializes a new group: the first in its order of
/// turns, so that new groups' first leaders spread over the members.
pub(super) fn first_turn(group: GroupId, members: impl Iterator<Item = NodeId>) -> NodeId {
    members
        .min_by_key(|node| mix(group, *node))
        .unwrap_or_default()
}

/// This node's place (0 = first) among the live voters of `group`, in an
/// order every node computes alike, different for each group.
fn turn_of(group: GroupId, self_id: NodeId, voters: impl Iterator<Item = NodeId>) -> u32 {
    let mine = mix(group, self_id);
    voters
        .filter(|v| *v != self_id && mix(group, *v) < mine)
        .count() as u32
}

/// splitmix64 of the pair: stable across processes and versions, unlike
/// the standard library's hashers.
fn mix(group: GroupId, node: NodeId) -> u64 {
    let mut z = group
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(node.rotate_left(32));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_computes_the_same_turns_and_first_turns_spread() {
        let voters = [1u64, 2, 3];
        let mut firsts = [0usize; 3];
        for group in 1..=3_000u64 {
            let mut turns: Vec<u32> = voters
                .iter()
                .map(|me| turn_of(group, *me, voters.iter().copied()))
                .collect();
            if let Some(first) = turns.iter().position(|t| *t == 0) {
                firsts[first] += 1;
            }
            turns.sort_unstable();
            assert_eq!(turns, vec![0, 1, 2], "group {group}");
        }
        for count in firsts {
            assert!((800..1_200).contains(&count), "first turns {firsts:?}");
        }
    }

    #[test]
    fn a_lost_voter_moves_the_others_up() {
        for group in 1..=100u64 {
            let mut turns: Vec<u32> = [2u64, 3]
                .iter()
                .map(|me| turn_of(group, *me, [2u64, 3].into_iter()))
                .collect();
            turns.sort_unstable();
            assert_eq!(turns, vec![0, 1]);
        }
        // Alone among the live voters: first.
        assert_eq!(turn_of(7, 2, [2u64].into_iter()), 0);
    }

    #[test]
    fn the_initializer_takes_the_first_turn_and_initializers_spread() {
        let members = [1u64, 2, 3];
        let mut initialized = [0usize; 3];
        for group in 1..=3_000u64 {
            let first = first_turn(group, members.iter().copied());
            assert_eq!(turn_of(group, first, members.iter().copied()), 0);
            initialized[(first - 1) as usize] += 1;
        }
        for count in initialized {
            assert!(
                (800..1_200).contains(&count),
                "initializers {initialized:?}"
            );
        }
        assert_eq!(first_turn(5, [4u64].into_iter()), 4);
    }
}
