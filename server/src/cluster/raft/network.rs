//! The client side of the internal Raft transport: one lazily connected
//! tonic channel per peer, shared by every group; each group gets its own
//! factory carrying its group id.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{stream_append_sequential, Backoff, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, RaftNetworkV2};
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
};
use regatta_proto::internal::raft::v1::raft_client::RaftClient;
use regatta_proto::internal::raft::v1::{NodeBeat, RaftMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::answer_credit::AnswerCredit;
use super::forward_batch::ForwardStats;
use super::service::{FROM_KEY, GROUP_KEY, TO_KEY};
use super::types::{GroupId, LogId, NodeId, Snapshot, SnapshotData, TypeConfig, Vote};

/// Largest message on the internal transport (entries carry values up to
/// 2 MiB; the log store keeps one AppendEntries under 8 MiB of entries).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What the transport knows of a peer's reachability.
#[derive(Default)]
pub struct PeerHealth {
    /// Whether the peer's liveness beat arrives (`liveness.rs`).
    live: AtomicBool,
    /// AppendStreams that failed to open in a row.
    failures: AtomicU32,
    /// Bumped when the peer's liveness beat comes back after a silence.
    returned: tokio::sync::watch::Sender<u64>,
}

impl PeerHealth {
    /// Counts a failure; the pause before the caller's next attempt. None
    /// for a slow answer while the peer beats (it is busy, not gone); a
    /// refused connection pauses even then: the peer's beat may not have
    /// fallen silent yet, and in that election timeout every group it
    /// followed would reconnect in a tight loop (`bench idle-tables`,
    /// 1,000 tables: over 8,000 refused connections a second).
    fn failed(&self, refused: bool) -> Duration {
        if !refused && self.live.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(5);
        (Duration::from_millis(200) * 2u32.pow(failures)).min(Duration::from_secs(5))
    }

    fn reached(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }
}

/// Channels to the other nodes of the cluster, by node id. The members
/// change when an operator replaces a node (`node/membership.rs`).
pub struct Peers {
    self_id: NodeId,
    addresses: RwLock<HashMap<NodeId, String>>,
    /// Ids removed from the cluster: never dialled, never answered.
    removed: RwLock<HashSet<NodeId>>,
    channels: RwLock<HashMap<NodeId, Channel>>,
    health: RwLock<HashMap<NodeId, Arc<PeerHealth>>>,
    forward_stats: ForwardStats,
}

impl Peers {
    pub fn new(self_id: NodeId, addresses: HashMap<NodeId, String>) -> Arc<Peers> {
        Arc::new(Peers {
            self_id,
            addresses: RwLock::new(addresses),
            removed: RwLock::default(),
            channels: RwLock::default(),
            health: RwLock::default(),
            forward_stats: ForwardStats::default(),
        })
    }

    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// Makes `addresses` the members this node dials and `removed` the ids
    /// it refuses; a member whose address changed is dialled anew.
    pub fn set_members(&self, addresses: HashMap<NodeId, String>, removed: HashSet<NodeId>) {
        let mut current = self.addresses.write().unwrap_or_else(|p| p.into_inner());
        if *current == addresses
            && *self.removed.read().unwrap_or_else(|p| p.into_inner()) == removed
        {
            return;
        }
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        channels.retain(|id, _| addresses.get(id) == current.get(id));
        *current = addresses;
        *self.removed.write().unwrap_or_else(|p| p.into_inner()) = removed;
    }

    /// Whether `node` was removed from the cluster.
    pub fn is_removed(&self, node: NodeId) -> bool {
        self.removed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&node)
    }

    /// Reachability of `peer`.
    fn health(&self, peer: NodeId) -> Arc<PeerHealth> {
        if let Some(health) = self
            .health
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
        {
            return health.clone();
        }
        self.health
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_default()
            .clone()
    }

    /// Whether `peer`'s liveness beat arrives; when it is back after a
    /// silence, transports paused on it try again at once.
    pub fn set_live(&self, peer: NodeId, live: bool) {
        let health = self.health(peer);
        let was = health.live.swap(live, Ordering::Relaxed);
        if live && !was {
            health.reached();
            health.returned.send_modify(|generation| *generation += 1);
        }
    }

    /// Every other member's id.
    pub fn others(&self) -> Vec<NodeId> {
        let mut others: Vec<NodeId> = self
            .addresses
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .filter(|id| *id != self.self_id)
            .collect();
        others.sort_unstable();
        others
    }

    /// Sends this node's liveness beat to `to`; answers with `to`'s.
    pub async fn beat(
        &self,
        to: NodeId,
        beat: NodeBeat,
        timeout: Duration,
    ) -> Result<NodeBeat, CallError> {
        let mut client = self.client(to).map_err(CallError::Unreachable)?;
        let mut request = tonic::Request::new(beat);
        request.set_timeout(timeout);
        client
            .liveness(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| CallError::from_status(&status))
    }

    /// Counters of the writes this node forwarded to leaders.
    pub fn forward_stats(&self) -> &ForwardStats {
        &self.forward_stats
    }

    /// A client for `node`; connects lazily and reconnects after failures.
    pub fn client(&self, node: NodeId) -> Result<RaftClient<Channel>, String> {
        if node == self.self_id {
            return Err("refusing to dial this node itself".into());
        }
        if let Some(channel) = self
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
        {
            return Ok(Self::wrap(channel.clone()));
        }
        let address = self
            .addresses
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned()
            .ok_or_else(|| format!("node {node} is not a member"))?;
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|err| format!("bad address {address}: {err}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        self.channels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, channel.clone());
        Ok(Self::wrap(channel))
    }

    fn wrap(channel: Channel) -> RaftClient<Channel> {
        RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Sends one message to `to` for `group` and decodes the reply payload.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        group: GroupId,
        method: Method,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let mut client = self.client(to).map_err(CallError::Unreachable)?;
        let payload =
            bincode::serialize(request).map_err(|err| CallError::Network(err.to_string()))?;
        let mut message = tonic::Request::new(RaftMessage {
            group_id: group,
            from: self.self_id,
            to,
            payload,
        });
        message.set_timeout(timeout);
        let reply = match method {
            Method::AppendEntries => client.append_entries(message).await,
            Method::Vote => client.vote(message).await,
            Method::InstallSnapshot => client.install_snapshot(message).await,
            Method::ForwardBatch => client.forward_batch(message).await,
            Method::ReadIndex => client.read_index(message).await,
        };
        let reply = reply.map_err(|status| CallError::from_status(&status))?;
        bincode::deserialize(&reply.into_inner().payload)
            .map_err(|err| CallError::Network(err.to_string()))
    }
}

/// The internal RPCs.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
    ForwardBatch,
    ReadIndex,
}

/// Why a call to a peer failed. Only `Unreachable` proves that the peer
/// did nothing with the request; after any other the outcome is unknown.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Never reached the peer's handler: the connection could not be made,
    /// or the peer answered that it does not run the group or is another
    /// node (both checked before anything is done).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Sent, and the connection failed before an answer (a reset, a
    /// keep-alive timeout): the peer may have acted on it.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The call did not complete in time; its outcome is unknown.
    #[error("timed out")]
    Timeout,
    /// Anything else on the way.
    #[error("network: {0}")]
    Network(String),
    /// The caller stopped waiting: another node became the group's leader
    /// while the call to this one was unanswered; its outcome is unknown.
    #[error("node {0} was no longer the leader when it had not answered")]
    Superseded(NodeId),
}

impl CallError {
    /// Tells "never sent" from "sent, no answer". tonic answers both with
    /// `Unavailable`; a failed connection attempt carries a
    /// `tonic::ConnectError` among its sources. A status the peer itself
    /// sent has no source at all.
    fn from_status(status: &tonic::Status) -> CallError {
        let message = status.message().to_string();
        let from_peer = std::error::Error::source(status).is_none();
        match status.code() {
            _ if never_connected(status) => CallError::Unreachable(message),
            // Refused before its handler ran: no such group here, another
            // node, or a server that does not know the call.
            tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::Unimplemented
                if from_peer =>
            {
                CallError::Unreachable(message)
            }
            tonic::Code::DeadlineExceeded => CallError::Timeout,
            // The connection failed under the call (a reset, a keep-alive
            // timeout, h2's flood protection answering a burst of stream
            // resets with ENHANCE_YOUR_CALM): the peer may have acted.
            _ if !from_peer => CallError::Lost(message),
            code => CallError::Network(format!("{code}: {message}")),
        }
    }
}

/// Between attempts to open a stream to a peer that does not run the
/// group yet. openraft backs off after ten such failures in a row.
const GROUP_NOT_RUNNING_PAUSE: Duration = Duration::from_millis(100);

/// The peer's own answer that it does not run the group (`service.rs`).
fn group_not_running(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound && std::error::Error::source(status).is_none()
}

fn never_connected(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Creates the network clients of one group.
pub struct GroupNetworkFactory {
    pub group: GroupId,
    pub peers: Arc<Peers>,
}

impl GroupNetworkFactory {
    fn client(&self, target: NodeId, pipelined: bool) -> GroupNetworkV2 {
        GroupNetworkV2 {
            unary: GroupNetwork {
                group: self.group,
                target,
                peers: self.peers.clone(),
            }
            .into_v2(),
            pipelined,
            group: self.group,
            target,
            peers: self.peers.clone(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetworkV2;

    /// Replication: AppendEntries pipelined over one stream per session.
    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> GroupNetworkV2 {
        self.client(target, true)
    }

    /// Heartbeats are single requests: a unary call each, no stream to open.
    async fn new_heartbeat_client(&mut self, target: NodeId, _node: &BasicNode) -> GroupNetworkV2 {
        self.client(target, false)
    }
}

/// openraft 0.10's network of one peer for one group: AppendEntries
/// pipelined over the AppendStream RPC (the leader does not wait for one
/// answer before it sends the next), everything else through
/// openraft-legacy's adapter over [`GroupNetwork`], which sends a snapshot
/// as InstallSnapshot chunks as 0.9 did.
pub struct GroupNetworkV2 {
    unary: Adapter<TypeConfig, GroupNetwork, SnapshotData>,
    pipelined: bool,
    group: GroupId,
    target: NodeId,
    peers: Arc<Peers>,
}

/// How long opening an AppendStream may take: openraft's per-RPC limit
/// (its heartbeat interval), but never under a second so that a busy
/// runtime does not turn every stream into a backoff.
fn stream_open_timeout(option: &RPCOption) -> Duration {
    option.hard_ttl().max(Duration::from_secs(1))
}

fn unreachable(reason: impl Into<String>) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason.into())))
}

impl GroupNetworkV2 {
    /// openraft opens the next AppendStream as soon as one fails to open
    /// (its backoff paces the requests of an open stream, not the opening),
    /// so every group a lost peer followed would spin on connecting to it.
    /// Pause first: until the peer's liveness beat returns, or at most
    /// 200 ms doubling to 5 s after each failure in a row; not at all for
    /// a slow open while the peer beats (`PeerHealth::failed`).
    async fn unreachable_after_pause(&self, reason: String, refused: bool) -> RPCError<TypeConfig> {
        let health = self.peers.health(self.target);
        let mut returned = health.returned.subscribe();
        let pause = health.failed(refused);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = returned.changed() => {}
        }
        unreachable(reason)
    }

    /// Opens an AppendStream and turns its answers back into openraft's.
    async fn open_stream<S>(
        &self,
        input: S,
        open_timeout: Duration,
    ) -> Result<
        BoxStream<'static, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
        RPCError<TypeConfig>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let mut client = self.peers.client(self.target).map_err(unreachable)?;
        let (group_id, from, to) = (self.group, self.peers.self_id(), self.target);
        // A request that does not encode ends the stream (it cannot happen
        // with bincode and these types; answers must stay one per request).
        // The requests end as soon as openraft drops the answers (or the
        // stream fails to open). openraft's request stream holds the
        // session's state lock while it waits for new entries; left to
        // hyper after its session ended, it would keep the next session
        // of this peer waiting for that lock until the next write.
        let (answers_dropped, requests_end) = tokio::sync::oneshot::channel::<()>();
        // openraft must credit each answer to the request it answers
        // (`answer_credit.rs`: stale answers once served a stale read).
        let credit = AnswerCredit::new();
        let outbound = credit
            .requests(input, last_log_id_of)
            .take_until(requests_end)
            .map(move |rpc| {
                bincode::serialize(&rpc).ok().map(|payload| RaftMessage {
                    group_id,
                    from,
                    to,
                    payload,
                })
            })
            .take_while(|message| std::future::ready(message.is_some()))
            .filter_map(std::future::ready);
        let mut request = tonic::Request::new(outbound);
        for (key, value) in [(GROUP_KEY, group_id), (FROM_KEY, from), (TO_KEY, to)] {
            request.metadata_mut().insert(key, value.into());
        }
        // The peer answers the stream's headers at once (it routes on the
        // metadata), so opening takes one round trip; a peer that does not
        // answer in time is treated as unreachable and openraft backs off.
        let opened = tokio::time::timeout(open_timeout, client.append_stream(request)).await;
        let opened = match opened {
            Ok(Ok(opened)) => opened,
            // The peer is up but does not run the group yet (a table its
            // catalogue reconcile has not started): try again soon. As
            // `Unreachable` it took openraft's backoff of a lost node, up
            // to 5 s, and a follower write through that peer waited that
            // long for its copy (flaked once in CI).
            Ok(Err(status)) if group_not_running(&status) => {
                tokio::time::sleep(GROUP_NOT_RUNNING_PAUSE).await;
                return Err(RPCError::Network(NetworkError::new(
                    &CallError::from_status(&status),
                )));
            }
            Ok(Err(status)) => match CallError::from_status(&status) {
                CallError::Unreachable(reason) | CallError::Lost(reason) => {
                    let refused = never_connected(&status);
                    return Err(self.unreachable_after_pause(reason, refused).await);
                }
                other => return Err(RPCError::Network(NetworkError::new(&other))),
            },
            Err(_) => {
                let reason = format!("opening an AppendStream took over {open_timeout:?}");
                return Err(self.unreachable_after_pause(reason, false).await);
            }
        };
        self.peers.health(self.target).reached();
        let answers = opened.into_inner();
        // Ends after the first error, as openraft expects of a stream.
        let answers = answers
            .map(move |answer| {
                let _requests_live_while_answers_do = &answers_dropped;
                let message = answer.map_err(|status| {
                    RPCError::Network(NetworkError::new(&CallError::from_status(&status)))
                })?;
                let answer: Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>> =
                    bincode::deserialize(&message.payload).map_err(|err| {
                        RPCError::Network(NetworkError::new(&CallError::Network(err.to_string())))
                    })?;
                // A peer whose Raft stopped cannot take appends; like 0.10's
                // own adapter, call it unreachable and let openraft back off.
                answer.map_err(|fatal| RPCError::Unreachable(Unreachable::new(&fatal)))
            })
            .scan(false, |failed, answer| {
                if *failed {
                    return std::future::ready(None);
                }
                *failed = matches!(answer, Err(_) | Ok(Err(_)));
                std::future::ready(Some(answer))
            });
        Ok(Box::pin(credit.answers(Box::pin(answers), acked_log_id_of)))
    }
}

type StreamAnswer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// The last log id an AppendEntries request covers (its `prev_log_id` when
/// it carries no entries), as openraft's in-flight queue reckons it.
fn last_log_id_of(request: &AppendEntriesRequest<TypeConfig>) -> Option<LogId> {
    request
        .entries
        .last()
        .map(|entry| entry.log_id)
        .or(request.prev_log_id)
}

fn acked_log_id_of(answer: &StreamAnswer) -> Option<Option<LogId>> {
    match answer {
        Ok(Ok(matching)) => Some(*matching),
        _ => None,
    }
}

impl RaftNetworkV2<TypeConfig> for GroupNetworkV2 {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        RaftNetworkV2::append_entries(&mut self.unary, rpc, option).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        if !self.pipelined {
            return stream_append_sequential(&mut self.unary, input, option);
        }
        Box::pin(async move {
            let answers = self
                .open_stream(input, stream_open_timeout(&option))
                .await?;
            let answers: BoxStream<'s, _> = answers;
            Ok(answers)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        RaftNetworkV2::vote(&mut self.unary, rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        RaftNetworkV2::full_snapshot(&mut self.unary, vote, snapshot, cancel, option).await
    }

    /// Retries of a peer that cannot be reached: 200 ms, doubling up to
    /// 5 s. A lost node is retried by every group it followed, hundreds at
    /// 1,000 tables, and openraft's constant 200 ms kept the survivors too
    /// busy to elect (`bench idle-tables`); the liveness beat resets the
    /// backoff when the peer is back (`liveness.rs`).
    fn backoff(&self) -> Option<Backoff> {
        let delays = std::iter::successors(Some(Duration::from_millis(200)), |delay| {
            Some((*delay * 2).min(Duration::from_secs(5)))
        });
        Some(Backoff::new(delays))
    }
}

/// openraft's view of one peer for one group.
pub struct GroupNetwork {
    group: GroupId,
    target: NodeId,
    peers: Arc<Peers>,
}

impl GroupNetwork {
    async fn send<Req, Resp, E>(
        &self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig, RaftError<TypeConfig, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: Result<Resp, RaftError<TypeConfig, E>> = self
            .peers
            .call(self.target, self.group, method, request, option.hard_ttl())
            .await
            .map_err(|err| match err {
                // Raft messages are safe to resend: openraft backs off and retries.
                CallError::Unreachable(reason) | CallError::Lost(reason) => {
                    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason)))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })?;
        reply.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig, RaftError<TypeConfig>>>
    {
        self.send(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<TypeConfig>,
        RPCError<TypeConfig, RaftError<TypeConfig, InstallSnapshotError>>,
    > {
        self.send(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig, RaftError<TypeConfig>>> {
        self.send(Method::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer nobody listens on: the request provably never left, so a
    /// forwarded write may be sent to the next leader.
    #[tokio::test]
    async fn a_refused_connection_is_unreachable_not_lost() {
        let address = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("bound").to_string()
        };
        let peers = Peers::new(1, HashMap::from([(2, address)]));
        let reply: Result<(), CallError> = peers
            .call(2, 1, Method::ForwardBatch, &(), Duration::from_secs(2))
            .await;
        assert!(matches!(reply, Err(CallError::Unreachable(_))), "{reply:?}");
    }
}
