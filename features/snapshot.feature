@replication @snapshot @regatta-2022
Feature: Follower recovery by snapshot
  A follower cluster that needs entries the leader cluster has compacted away
  copies the table from the leader's Snapshot.Stream, replaces its copy
  atomically on every follower node (reads keep answering from the old copy
  until the switch), and goes on replicating from the snapshot's leader
  index.

  @needs-follower-cluster @needs-flags
  Scenario: A follower cluster started after the leader compacted its log copies the table by snapshot
    Given a leader cluster of 3 nodes with tables "regatta-test" and flags "--raft.snapshot-entries=20 --raft.compaction-overhead=5"
    When I write 150 keys "k" into "regatta-test"
    And node 1 has compacted its log of "regatta-test" past leader index 1
    Given a follower cluster of 3 nodes following it
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    And the follower cluster has recovered "regatta-test" by snapshot at least 1 time
    And every follower node eventually holds the same pairs in "regatta-test" as node 1
    When I put "after" = "snapshot" into "regatta-test" on node 2
    Then every follower node eventually holds "after" = "snapshot" in "regatta-test"

  @faults @needs-faults @needs-follower-cluster @needs-flags
  # Whether the follower then needs a snapshot depends on what its open
  # stream already carried when the link was cut (a cut that holds the
  # connection, as the processes backend's, lets it resume): the scenario
  # checks the reads and the end state, not the path.
  Scenario: A follower cluster cut off while the leader compacted catches up, and reads keep answering
    Given a leader cluster of 3 nodes with tables "regatta-test" and flags "--raft.snapshot-entries=20 --raft.compaction-overhead=5"
    When I write 40 keys "before-" into "regatta-test"
    And node 1 has compacted its log of "regatta-test" past leader index 1
    Given a follower cluster of 3 nodes following it
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    And the follower cluster has recovered "regatta-test" by snapshot at least 1 time
    When the follower cluster is cut off from the leader cluster
    And I write 200 keys "during-" of 8 KiB into "regatta-test" highest key first
    And I read "before-000000" from "regatta-test" on node 1
    Then the request succeeds
    When node 1 has compacted its log of "regatta-test" past leader index 60
    And in the background I keep reading the keys of "regatta-test" on every follower node
    And the follower cluster is reconnected to the leader cluster
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    And every background read held the 40 keys "before-" and a first-written run of the 200 keys "during-", the last read all of them
    And every follower node eventually holds the same pairs in "regatta-test" as node 1

  @faults @extension @needs-faults @needs-follower-cluster @needs-flags
  Scenario: After a recovery by snapshot the follower's stored leader index is the leader's applied index
    Given a leader cluster of 3 nodes with tables "regatta-test" and flags "--raft.snapshot-entries=20 --raft.compaction-overhead=5"
    When I write 60 keys "k" into "regatta-test"
    Given a follower cluster of 3 nodes following it
    Then the follower cluster's stored leader index of "regatta-test" eventually equals the applied index of node 1
    When the follower cluster is cut off from the leader cluster
    And I write 100 keys "more-" into "regatta-test"
    And the follower cluster is reconnected to the leader cluster
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    And the follower cluster's stored leader index of "regatta-test" eventually equals the applied index of node 1

  @faults @extension @needs-faults @needs-follower-cluster
  Scenario: A follower cluster cut off while the leader kept its log resumes from its stored index without a snapshot
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes following it
    When I write 10 keys "before-" into "regatta-test"
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    When the follower cluster is cut off from the leader cluster
    And I write 30 keys "during-" into "regatta-test"
    And the follower cluster is reconnected to the leader cluster
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    And no follower node recovered "regatta-test" by snapshot
