@replication @regatta-2022
Feature: Follower clusters
  A follower cluster copies every table of the leader cluster and serves it
  read-only: writes and Txn results show up there, tables come and go with
  the leader's, and with --replication.forward-writes=false writes sent to a
  follower are refused as Regatta 2022 did (follower_writes.feature has
  Regatta 0.5's forwarding).

  # Wording: "I get" is a serializable Range, "I read" a linearizable one. On
  # a follower node both answer from the follower cluster's copy: there a
  # linearizable read is linearizable within the follower cluster only.

  @needs-follower-cluster
  Scenario: Writes on the leader cluster show up on every follower node
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "a=1, b=2"
    And a follower cluster of 3 nodes following it
    Then every follower node eventually holds "a" = "1" in "regatta-test"
    When I put "c" = "3" into "regatta-test" on node 2
    And I delete "a" from "regatta-test" on node 3
    Then every follower node eventually holds "c" = "3" in "regatta-test"
    And no follower node holds "a" in "regatta-test"
    And a serializable range from "\x00" to "\x00" over "regatta-test" on follower node 1 returns "b=2, c=3"

  @needs-follower-cluster
  Scenario: A Txn on the leader has the same outcome on the follower
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "n=1"
    And a follower cluster of 3 nodes following it
    When I send a Txn to "regatta-test" on node 1 with:
      | part    | op    | key | range_end | value | flags |
      | compare | EQUAL | n   |           | 1     |       |
      | success | put   | n   |           | 2     |       |
      | success | put   | ok  |           | yes   |       |
      | failure | put   | ko  |           | yes   |       |
    Then the Txn takes the success branch with responses:
      | put |
      | put |
    And every follower node eventually holds "n" = "2" in "regatta-test"
    And every follower node eventually holds "ok" = "yes" in "regatta-test"
    And no follower node holds "ko" in "regatta-test"

  @needs-follower-cluster @needs-flags
  Scenario: A follower refuses writes before any other check, with Regatta's messages
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes with flags "--replication.forward-writes=false" following it
    When I send Put {table: "", key: ""} to follower node 1
    Then the error is Unimplemented "method Put not implemented for follower"
    When I send Put {table: "regatta-test", key: "k", value: "v"} to follower node 2
    Then the error is Unimplemented "method Put not implemented for follower"
    When I send DeleteRange {table: "regatta-test", key: "k"} to follower node 3
    Then the error is Unimplemented "method DeleteRange not implemented for follower"
    When I send a Txn to "regatta-test" on follower node 1 with:
      | part    | op    | key | range_end | value | flags |
      | success | range | k   |           |       |       |
      | failure | put   | k   |           | v     |       |
    Then the error is Unimplemented "writable Txn not implemented for follower"
    And no node holds "k" in "regatta-test"

  @needs-follower-cluster
  Scenario: Reads and read-only Txns on a follower answer from its copy
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "k=v"
    And a follower cluster of 3 nodes following it
    Then every follower node eventually holds "k" = "v" in "regatta-test"
    When I read "k" from "regatta-test" on follower node 2
    Then the response has pairs "k=v"
    And the header is complete and names the answering node as replica
    When I send a Txn to "regatta-test" on follower node 3 with:
      | part    | op     | key | range_end | value | flags |
      | compare | EXISTS | k   |           |       |       |
      | success | range  | k   |           |       |       |
    Then the Txn takes the success branch with responses:
      | range k=v |
    When I send Range {table: "nope", key: "k"} to any follower node
    Then the error is NotFound "table not found"

  @restart @needs-faults @needs-follower-cluster @needs-flags @fixed
  Scenario: Tables created and deleted on the leader cluster follow on the follower
    Given a leader cluster of 3 nodes with tables "regatta-test,doomed"
    And a follower cluster of 3 nodes following it
    When node 1 is stopped
    And node 1 is restarted with flags "--tables.names=regatta-test,doomed,fresh --tables.delete=doomed"
    Then within 30 seconds every follower node serves table "fresh"
    And within 30 seconds no follower node serves table "doomed"
    When I put "f" = "1" into "fresh" on node 2
    Then every follower node eventually holds "f" = "1" in "fresh"

  @restart @needs-faults @needs-follower-cluster
  Scenario: The whole leader cluster restarted: the follower goes on from where it was
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "before=1"
    And a follower cluster of 3 nodes following it
    Then every follower node eventually holds "before" = "1" in "regatta-test"
    When every node is killed
    And every node is restarted
    And within 30 seconds a put of "after" = "2" into "regatta-test" on any node succeeds
    Then every follower node eventually holds "after" = "2" in "regatta-test"
    And every follower node eventually holds "before" = "1" in "regatta-test"

  @restart @needs-faults @needs-follower-cluster
  Scenario: A follower node killed under replication catches up when it comes back
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes following it
    When I write 20 keys "before-" into "regatta-test"
    And follower node 1 is killed
    And I write 30 keys "during-" into "regatta-test"
    Then follower node 2 eventually holds every acknowledged write to "regatta-test"
    When follower node 1 is restarted
    Then every follower node eventually holds every acknowledged write to "regatta-test"

  @faults @needs-faults @needs-follower-cluster
  Scenario: A follower cluster cut off from the leader cluster keeps serving its copy and converges once reconnected
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes following it
    When I write 10 keys "before-" into "regatta-test"
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    When the follower cluster is cut off from the leader cluster
    And I write 30 keys "during-" into "regatta-test"
    And I get "before-000001" from "regatta-test" on follower node 2
    Then the response has pairs "before-000001=value-1"
    And no follower node holds "during-000000" in "regatta-test"
    When the follower cluster is reconnected to the leader cluster
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    And every follower node eventually holds the same pairs in "regatta-test" as node 1
