@kv @regatta-2022
Feature: Response headers and revisions
  Every answer carries shard_id, replica_id, raft_term and raft_leader_id,
  on every node, leader or not. Each write gets a new, strictly greater
  revision of its table.

  # Wording: "I get" is a serializable Range (the node answers from its own
  # copy, which may trail the leader); "I read" is a linearizable one (it
  # reflects every write acknowledged before it began).

  Background:
    Given a leader cluster of 3 nodes with tables "regatta-test,other"

  @fixed
  Scenario Outline: Every node fills the whole header
    When I get "a" from "regatta-test" on node <node>
    Then the header is complete and names the answering node as replica
    When I put "a" = "<node>" into "regatta-test" on node <node>
    Then the header is complete and names the answering node as replica

    Examples:
      | node |
      | 1    |
      | 2    |
      | 3    |

  @fixed
  Scenario: The header of a follower names the leader the cluster agrees on
    Then every node names the same leader and term for "regatta-test"
    When I get "a" from "regatta-test" on a follower
    Then the header is complete and names the answering node as replica

  Scenario: Tables have distinct shards, numbered from 10001
    When I get "a" from "regatta-test" on node 1
    Then the shard id is remembered as "first"
    When I get "a" from "regatta-test" on node 2
    Then the shard id equals "first"
    When I get "a" from "other" on node 3
    Then the shard id differs from "first"

  @fixed
  Scenario: Every kind of write gets a strictly greater revision
    When I put "a" = "1" into "regatta-test" on node 1
    Then the revision is remembered as "r1"
    When I put "a" = "2" into "regatta-test" on node 2
    Then the revision is greater than "r1"
    And the revision is remembered as "r2"
    When I delete "missing" from "regatta-test" on node 3
    Then the revision is greater than "r2"
    And the revision is remembered as "r3"
    When I send a Txn to "regatta-test" on node 1 with:
      | part    | op    | key | range_end | value | flags |
      | compare | EQUAL | a   |           | 9     |       |
      | success | put   | a   |           | 3     |       |
    Then the Txn takes the failure branch with no responses
    And the revision is greater than "r3"
    And the revision is remembered as "r4"
    When I send a Txn to "regatta-test" on node 2 with:
      | part    | op  | key | range_end | value | flags |
      | success | put | b   |           | 1     |       |
    Then the revision is greater than "r4"

  Scenario: Tables count revisions apart
    # Five writes, not two: a revision is a Raft index, and each table's
    # group may have had an extra election (one more entry) at start.
    When I put "a" = "1" into "regatta-test" on node 1
    And I put "a" = "2" into "regatta-test" on node 1
    And I put "a" = "3" into "regatta-test" on node 1
    And I put "a" = "4" into "regatta-test" on node 1
    And I put "a" = "5" into "regatta-test" on node 1
    Then the revision is remembered as "test"
    When I put "a" = "1" into "other" on node 1
    Then the revision is less than "test"

  @extension
  Scenario: Pairs carry the revision that created them and the one that last changed them
    When I put "k" = "1" into "regatta-test" on node 1
    Then the revision is remembered as "created"
    When I put "k" = "2" into "regatta-test" on node 2
    Then the revision is remembered as "changed"
    When I read "k" from "regatta-test" on node 3
    Then the pair "k" was created at "created" and modified at "changed"
    When I delete "k" from "regatta-test" on node 1
    And I put "k" = "3" into "regatta-test" on node 2
    Then the revision is remembered as "recreated"
    When I read "k" from "regatta-test" on node 1
    Then the pair "k" was created at "recreated" and modified at "recreated"

  @extension
  Scenario: Reads return the revision of the state they read
    When I put "k" = "1" into "regatta-test" on node 1
    Then the revision is remembered as "written"
    When I read "k" from "regatta-test" on node 2
    Then the revision is equal to "written"
    When I send a Txn to "regatta-test" on node 3 with:
      | part    | op    | key | range_end | value | flags |
      | success | range | k   |           |       |       |
    Then the revision is equal to "written"

  @extension
  Scenario: Revision bounds filter pairs, and count and more count only what passes
    When I put "a" = "1" into "regatta-test" on node 1
    Then the revision is remembered as "ra"
    When I put "b" = "1" into "regatta-test" on node 1
    Then the revision is remembered as "rb"
    When I put "c" = "1" into "regatta-test" on node 1
    And I put "a" = "2" into "regatta-test" on node 1
    Then the revision is remembered as "ra2"
    When I send Range {table: "regatta-test", key: "a", range_end: "\x00", min_mod_revision: $rb, linearizable} to any node
    Then the response has pairs "a=2, b=1, c=1"
    When I send Range {table: "regatta-test", key: "a", range_end: "\x00", max_mod_revision: $rb, linearizable} to any node
    Then the response has pairs "b=1"
    And count is 1
    When I send Range {table: "regatta-test", key: "a", range_end: "\x00", min_create_revision: $rb, linearizable} to any node
    Then the response has pairs "b=1, c=1"
    When I send Range {table: "regatta-test", key: "a", range_end: "\x00", max_create_revision: $rb, limit: 1, linearizable} to any node
    Then the response has pairs "a=2"
    And more is true
    When I send Range {table: "regatta-test", key: "a", range_end: "\x00", min_mod_revision: $rb, max_mod_revision: $rb, count_only, linearizable} to any node
    Then count is 1
