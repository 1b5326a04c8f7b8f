//! openraft's configuration of a node's groups, from Regatta's timing flags.

use std::sync::Arc;
use std::time::Duration;

use super::liveness::LivenessTiming;

/// The configuration every group of a node runs with.
#[derive(Clone)]
pub struct RaftTiming {
    config: Arc<openraft::Config>,
    election: Duration,
}

impl RaftTiming {
    /// openraft's own election timer draws a timeout from [min, max) =
    /// [E/3, 2E/3) of Regatta's election timeout E (`election`), after the
    /// leader's lease (`election_timeout_max`) has passed: it runs only
    /// where the liveness rounds leave it on (a lone voter, a group without
    /// a leader for three election timeouts). Elsewhere the liveness rounds
    /// (`liveness.rs`) start elections themselves, an election timeout after
    /// the leader's node fell silent. `snapshot_entries` 0 never snapshots.
    ///
    /// Groups start with their timers parked.
    pub fn new(
        heartbeat: Duration,
        election: Duration,
        snapshot_entries: u64,
        compaction_overhead: u64,
    ) -> Result<RaftTiming, String> {
        let election_timeout = election;
        let heartbeat = heartbeat.as_millis() as u64;
        let election = election.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "regatta".into(),
            heartbeat_interval: heartbeat,
            election_timeout_min: (election / 3).max(heartbeat + 1),
            election_timeout_max: (election * 2 / 3).max(heartbeat + 2),
            install_snapshot_timeout: 10_000,
            snapshot_policy: if snapshot_entries == 0 {
                openraft::SnapshotPolicy::Never
            } else {
                openraft::SnapshotPolicy::LogsSinceLast(snapshot_entries)
            },
            max_in_snapshot_log_to_keep: compaction_overhead,
            replication_lag_threshold: snapshot_entries.max(5_000),
            // Purging is one range delete; batch it, but not beyond what a
            // small snapshot interval would ever reach.
            purge_batch_size: (snapshot_entries / 10).clamp(1, 256),
            enable_tick: false,
            ..openraft::Config::default()
        };
        let config = config.validate().map_err(|err| err.to_string())?;
        Ok(RaftTiming {
            config: Arc::new(config),
            election: election_timeout,
        })
    }

    /// The leader's heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.config.heartbeat_interval)
    }

    /// The node's liveness rounds: a beat per heartbeat interval, a peer
    /// lost after an election timeout, and a third of one (openraft's
    /// shortest election timeout with these settings) as the grace a group
    /// gets when its leader's node still beats.
    pub fn liveness(&self) -> LivenessTiming {
        LivenessTiming {
            beat: self.heartbeat(),
            silence: self.election,
            turn: Duration::from_millis(self.config.election_timeout_min),
        }
    }

    /// How long a quorum's ack lets a leader take writes (openraft's
    /// leader lease, `election_timeout_max`).
    pub fn leader_lease(&self) -> Duration {
        Duration::from_millis(self.config.election_timeout_max)
    }

    pub(super) fn openraft(&self) -> Arc<openraft::Config> {
        self.config.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openraft_timeouts_are_a_third_and_two_thirds_of_e() {
        let timing = RaftTiming::new(
            Duration::from_millis(50),
            Duration::from_secs(1),
            10_000,
            5_000,
        )
        .expect("valid");
        let config = timing.openraft();
        assert_eq!(config.heartbeat_interval, 50);
        assert_eq!(
            (config.election_timeout_min, config.election_timeout_max),
            (333, 666)
        );
        assert_eq!(timing.heartbeat(), Duration::from_millis(50));
    }
}
