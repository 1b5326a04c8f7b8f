@regatta-0.5 @addresses
Feature: The KV API on a Unix socket
  Regatta 0.3+ takes `unix:///path` (and `unixs://`, with TLS) wherever it
  takes an address. A cluster whose nodes serve the KV API on a Unix socket
  answers every call there as over TCP.

  Background:
    Given a leader cluster of 3 nodes with tables "sock" serving its KV API on a Unix socket

  @needs-flags
  Scenario: Writes, reads, Txn and IterateRange through the socket
    When I put "a" = "1" into "sock" on node 1
    And I put "b" = "2" into "sock" on node 2 with prev_kv
    Then the request succeeds
    And every node eventually holds "a" = "1" in "sock"
    When I send a Txn to "sock" on node 3 with:
      | part    | op     | key | range_end | value | flags   |
      | compare | EQUAL  | a   |           | 1     |         |
      | success | put    | c   |           | 3     |         |
      | success | delete | a   |           |       | prev_kv |
    Then the Txn takes the success branch with responses:
      | put           |
      | delete 1: a=1 |
    When I send IterateRange {table: "sock", key: "\x00", range_end: "\x00", linearizable} to node 2
    Then the stream's pairs are "b=2, c=3"

  @needs-flags
  Scenario: Validation answers the same errors through the socket
    When I send Range {table: "sock", key: ""} to node 1
    Then the error is InvalidArgument "key must be set"
