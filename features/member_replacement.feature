@membership @extension @restart @regatta-2022 @needs-faults
Feature: Replacing a node whose disk is lost
  A node whose disk is lost cannot come back under its old id: its vote
  and log are gone, and counting it again could lose acknowledged writes.
  The operator removes the old id and adds a fresh node under a new id
  (started with --raft.join) through membership.v1.Membership on the
  maintenance API (`regatta cluster remove-member` / `add-member`). Every
  Raft group of the cluster (the catalogue's and each table's) changes its
  voters; the new node catches up by snapshot. An id removed once is never
  taken again. (This implementation's extension: Regatta has no member
  changes.)

  @needs-flags
  Scenario: A lost node is removed, a new node joins under a new id and catches up by snapshot
    Given a leader cluster of 3 nodes with tables "regatta-test,second" and flags "--raft.snapshot-entries=20 --raft.compaction-overhead=5"
    When I write 100 keys "k" into "regatta-test"
    And I write 30 keys "s" into "second"
    And node 3 is killed
    And I remove member 3 through the maintenance API of node 1
    Then the maintenance call succeeds
    And within 30 seconds node 1 lists the members:
      | id | name | client URL            |
      | 1  | 1    | http://127.0.0.1:8443 |
      | 2  | 2    | http://127.0.0.1:8443 |
    When I write 100 keys "after-removal" into "regatta-test"
    And node 3's disk is lost and it starts again empty as node 4, joining the cluster
    And I add member 4 at the raft address of node 3 through the maintenance API of node 2
    Then the maintenance call succeeds
    And within 30 seconds every node lists the members:
      | id | name | client URL            |
      | 1  | 1    | http://127.0.0.1:8443 |
      | 2  | 2    | http://127.0.0.1:8443 |
      | 4  | 4    | http://127.0.0.1:8443 |
    And node 3 eventually holds every acknowledged write to "regatta-test"
    And node 3 eventually holds every acknowledged write to "second"
    And node 3 caught up on "regatta-test" by installing a snapshot
    # The new node votes: with node 1 gone, nodes 2 and 4 are a quorum.
    When node 1 is killed
    And within 30 seconds a put of "quorum" = "two-and-four" into "regatta-test" on node 3 succeeds
    Then node 3 eventually holds "quorum" = "two-and-four" in "regatta-test"
    When I add member 3 at the raft address of node 3 through the maintenance API of node 2
    Then the maintenance call fails with FailedPrecondition "node 3 was removed from the cluster and its id is never used again: start the new node under a new id"

  Scenario: Member changes that would break the cluster are refused with exact errors
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I remove member 7 through the maintenance API of node 1
    Then the maintenance call fails with NotFound "node 7 is not a member"
    When I add member 0 at the raft address of node 3 through the maintenance API of node 1
    Then the maintenance call fails with InvalidArgument "node id must be greater than 0"
    When I add member 2 at the raft address of node 3 through the maintenance API of node 1
    Then the maintenance call fails with AlreadyExists
    When I remove member 3 through the maintenance API of node 1
    Then the maintenance call succeeds
    When I remove member 3 through the maintenance API of node 2
    Then the maintenance call succeeds
    When I remove member 2 through the maintenance API of node 1
    And I remove member 1 through the maintenance API of node 2
    Then the maintenance call fails with FailedPrecondition "node 1 is the cluster's last member"
