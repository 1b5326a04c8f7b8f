@replication @regatta-2022
Feature: Replication protocol of the leader cluster
  Follower clusters copy tables through Metadata.Get, Log.Replicate and
  Snapshot.Stream on the leader cluster's replication listener. These
  scenarios call them directly. docs/replication.md explains the protocol.

  Scenario: Metadata.Get lists every table, sorted by name, as REPLICATED
    Given a leader cluster of 3 nodes with tables "regatta-test,other,alpha"
    Then Metadata.Get on any node lists the tables "alpha, other, regatta-test"

  Scenario: leader_index 0 and unknown tables are refused
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I replicate "regatta-test" from leader index 0 on any node
    Then the replication call fails with InvalidArgument "invalid leaderIndex: leaderIndex must be greater than 0"
    When I replicate "nope" from leader index 1 on any node
    Then the replication call fails with NotFound "table not found"
    When I stream a snapshot of "nope" from any node
    Then the snapshot call fails with NotFound "table not found"

  @fixed
  Scenario: The log from its first entry: contiguous, writes as commands, other entries as DUMMYs
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "a=1, b=2, c=3"
    # A node serves what it has applied: a linearizable read lets it catch up.
    When I read "c" from "regatta-test" on node 2
    And I replicate "regatta-test" from leader index 1 on node 2
    Then the stream carries contiguous commands from leader index 1 up to the applied index
    And the first command is a DUMMY
    And the commands put "a, b, c" in order, the other entries being DUMMY

  Scenario: Asked beyond the next entry, the leader answers LEADER_BEHIND
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "a=1"
    # A linearizable read makes node 1 apply everything acknowledged so far.
    When I read "a" from "regatta-test" on node 1
    And I replicate "regatta-test" from the applied index plus 2 on node 1
    Then the stream is one LEADER_BEHIND error carrying the applied index

  @fixed
  Scenario: With nothing new, the stream is one message with only the applied index
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "a=1"
    When I read "a" from "regatta-test" on node 3
    And I replicate "regatta-test" from the applied index plus 1 on node 3
    Then the stream is one message with only the applied index

  @needs-flags
  Scenario: Messages stay within the configured size; a larger entry travels alone
    Given a leader cluster of 3 nodes with tables "regatta-test" and flags "--replication.max-send-message-size-bytes=300000"
    And table "regatta-test" holds "k1=100000 bytes of "a", k2=100000 bytes of "b", k3=100000 bytes of "c", k4=100000 bytes of "d", k5=100000 bytes of "e", k6=100000 bytes of "f", big=400000 bytes of "g""
    When I read "big" from "regatta-test" on node 1
    And I replicate "regatta-test" from leader index 1 on node 1
    Then the stream has at least 4 messages, each at most 300000 bytes unless it holds one command
    And the stream carries contiguous commands from leader index 1 up to the applied index
    And the commands put "k1, k2, k3, k4, k5, k6, big" in order, the other entries being DUMMY

  @needs-flags
  Scenario: A compacted log answers USE_SNAPSHOT; the snapshot and the log after it continue the table
    Given a leader cluster of 3 nodes with tables "regatta-test" and flags "--raft.snapshot-entries=20 --raft.compaction-overhead=5"
    And table "regatta-test" holds "a=1, b=2, c=3, d=4, e=5, f=6, g=7, h=8, i=9, j=10, k=11, l=12, m=13, n=14, o=15, p=16, q=17, r=18, s=19, t=20, u=21, v=22, w=23, x=24, y=25, z=26"
    When I read "z" from "regatta-test" on node 1
    And node 1 has compacted its log of "regatta-test" past leader index 1
    And I replicate "regatta-test" from leader index 1 on node 1
    Then the stream is one USE_SNAPSHOT error carrying the applied index
    When I stream a snapshot of "regatta-test" from node 1
    Then the snapshot holds "a=1, b=2, c=3, d=4, e=5, f=6, g=7, h=8, i=9, j=10, k=11, l=12, m=13, n=14, o=15, p=16, q=17, r=18, s=19, t=20, u=21, v=22, w=23, x=24, y=25, z=26" in chunks of at most 1 MiB and ends with a DUMMY carrying its leader index
    When I put "after" = "snapshot" into "regatta-test" on node 1
    And I read "after" from "regatta-test" on node 1
    And I replicate "regatta-test" from the snapshot's leader index plus 1 on node 1
    Then the commands put "after" in order, the other entries being DUMMY

  @extension
  Scenario: In follow mode the stream stays open and pushes writes as they commit
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I follow "regatta-test" from the applied index plus 1 on node 2
    And I put "pushed" = "now" into "regatta-test" on node 3
    Then the followed stream delivers a put of "pushed" within 5 seconds
