@replication @follower_writes @regatta-0.5
Feature: Writes sent to a follower cluster
  A follower cluster forwards Put, DeleteRange and every Txn that writes to
  the leader cluster, waits until its own copy holds the write and returns
  the leader's answer, so a client reads its write there next. The leader's
  errors come back with their code, prefixed "leader error: ". With
  --replication.forward-writes=false it refuses writes as Regatta 2022 did.

  # Wording: "I get" is a serializable Range: the follower node answers from
  # its own copy without asking any other node.

  @needs-follower-cluster
  Scenario: A write on a follower is readable there at once
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "a=1, b=2"
    And a follower cluster of 3 nodes following it
    When I put "k" = "v" into "regatta-test" on follower node 2
    Then the request succeeds
    When I get "k" from "regatta-test" on follower node 2
    Then the response has pairs "k=v"
    When I put "k" = "w" into "regatta-test" on follower node 3 with prev_kv
    Then the previous pair is "k" = "v"
    When I get "k" from "regatta-test" on follower node 3
    Then the response has pairs "k=w"
    When I delete "a" from "regatta-test" on follower node 1
    Then 1 key was deleted
    When I get "a" from "regatta-test" on follower node 1
    Then the response holds 0 pairs
    And every node eventually holds "k" = "w" in "regatta-test"
    And no node holds "a" in "regatta-test"
    And every follower node eventually holds "k" = "w" in "regatta-test"

  @needs-follower-cluster
  Scenario: A writing Txn on a follower runs on the leader cluster
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "n=1"
    And a follower cluster of 3 nodes following it
    Then every follower node eventually holds "n" = "1" in "regatta-test"
    When I send a Txn to "regatta-test" on follower node 1 with:
      | part    | op    | key | range_end | value | flags |
      | compare | EQUAL | n   |           | 1     |       |
      | success | put   | n   |           | 2     |       |
      | success | range | n   |           |       |       |
      | failure | put   | ko  |           | yes   |       |
    Then the Txn takes the success branch with responses:
      | put       |
      | range n=2 |
    When I get "n" from "regatta-test" on follower node 1
    Then the response has pairs "n=2"
    And every node eventually holds "n" = "2" in "regatta-test"
    And no follower node holds "ko" in "regatta-test"

  @needs-follower-cluster
  Scenario: The leader cluster's errors come back with its code
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes following it
    When I send Put {table: "", key: "k"} to follower node 1
    Then the error is InvalidArgument "leader error: table must be set"
    When I send Put {table: "regatta-test", key: ""} to follower node 2
    Then the error is InvalidArgument "leader error: key must be set"
    When I send Put {table: "nope", key: "k"} to follower node 3
    Then the error is NotFound "leader error: table not found"
    When I send DeleteRange {table: "regatta-test", key: 1025 bytes of "k"} to follower node 1
    Then the error is InvalidArgument "leader error: key length exceeded max allowed value"
    And no follower node holds "k" in "regatta-test"

  @needs-follower-cluster
  Scenario: A Txn race between a follower writer and a leader writer has exactly one winner
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "lock=free"
    And a follower cluster of 3 nodes following it
    Then every follower node eventually holds "lock" = "free" in "regatta-test"
    When a Txn setting "lock" from "free" to "follower" on follower node 1 races one setting it to "leader" on node 2 in "regatta-test"
    Then exactly one racing Txn succeeded, and every node of both clusters eventually holds its value for "lock" in "regatta-test"

  @extension @needs-follower-cluster @needs-flags
  Scenario: A write that does not reach the follower by the deadline names its revision
    Given a leader cluster of 1 node with tables "regatta-test"
    And table "regatta-test" holds "seed=1"
    And a follower cluster of 1 node with flags "--replication.follow-mode=false --replication.poll-interval=1h" following it
    # Copied once, then the follower waits an hour before asking again.
    Then every follower node eventually holds "seed" = "1" in "regatta-test"
    When with a deadline of 1 second, I put "late" = "1" into "regatta-test" on follower node 1
    Then the error says the write was committed at the revision of "late" in "regatta-test" on the leader cluster

  @extension @restart @needs-faults @needs-follower-cluster
  Scenario: With the leader cluster down, the deadline says what became of the write
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes following it
    When every node is stopped
    And with a deadline of 2 seconds, I put "lost" = "1" into "regatta-test" on follower node 1
    Then the error is DeadlineExceeded and says whether the write was made
    When every node is restarted
    Then the leader cluster holds "lost" in "regatta-test" only if the error said the write may have been made

  @needs-follower-cluster @needs-flags
  Scenario: With forwarding off, a follower refuses writes as Regatta 2022 did
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes with flags "--replication.forward-writes=false" following it
    When I send Put {table: "regatta-test", key: "k", value: "v"} to follower node 1
    Then the error is Unimplemented "method Put not implemented for follower"
    When I send DeleteRange {table: "regatta-test", key: "k"} to follower node 2
    Then the error is Unimplemented "method DeleteRange not implemented for follower"
    When I send a Txn to "regatta-test" on follower node 3 with:
      | part    | op  | key | range_end | value | flags |
      | success | put | k   |           | v     |       |
    Then the error is Unimplemented "writable Txn not implemented for follower"
    And no node holds "k" in "regatta-test"
