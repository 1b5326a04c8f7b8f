@kv @regatta-0.5
Feature: IterateRange
  IterateRange (Regatta 0.5) streams a key range from one point-in-time view
  of a table: Range's checks first, then RangeResponse messages in ascending
  key order, each under 4 MiB - 1 KiB encoded, `more` on every message but
  the last and exact at `limit`, `count` per message, the view's revision in
  every header. A client may stop reading halfway.

  Background:
    Given a leader cluster of 3 nodes with tables "regatta-test"

  Scenario: Values near 2 MiB travel one per message, every message under 4 MiB
    Given table "regatta-test" holds 4 keys from "big/" with values of 2097000 bytes
    When I send IterateRange {table: "regatta-test", key: "big/", range_end: "big0", linearizable} to any node
    Then the stream has 4 messages
    And the stream carries 4 pairs from "big/" in ascending key order
    And every message stays under 4 MiB - 1 KiB encoded
    And more is true on every message but the last, which has more false
    And each message counts its own pairs, 4 in all
    And every message has a header with the same revision

  Scenario: Pairs of 1 MB fill messages four at a time
    Given table "regatta-test" holds 9 keys from "m/" with values of 1000000 bytes
    When I send IterateRange {table: "regatta-test", key: "m/", range_end: "m0", linearizable} to any node
    Then the stream has 3 messages
    And the stream carries 9 pairs from "m/" in ascending key order
    And every message stays under 4 MiB - 1 KiB encoded
    And more is true on every message but the last, which has more false
    And each message counts its own pairs, 9 in all

  Scenario: limit bounds the whole stream, and more is exact at the limit
    Given table "regatta-test" holds 300 keys from "s/" with values of 20000 bytes
    When I send IterateRange {table: "regatta-test", key: "s/", range_end: "s0", linearizable} to any node
    Then the stream has at least 2 messages
    And each message counts its own pairs, 300 in all
    And more is true on every message but the last, which has more false
    When I send IterateRange {table: "regatta-test", key: "s/", range_end: "s0", limit: 299, linearizable} to any node
    Then each message counts its own pairs, 299 in all
    And more is true on every message but the last, which has more true
    When I send IterateRange {table: "regatta-test", key: "s/", range_end: "s0", limit: 300, linearizable} to any node
    Then each message counts its own pairs, 300 in all
    And more is true on every message but the last, which has more false
    When I send IterateRange {table: "regatta-test", key: "s/", range_end: "s0", limit: 301, linearizable} to any node
    Then each message counts its own pairs, 300 in all
    And more is true on every message but the last, which has more false

  Scenario: count_only is one message with the total; keys_only carries keys only
    Given table "regatta-test" holds 300 keys from "s/" with values of 20000 bytes
    When I send IterateRange {table: "regatta-test", key: "s/", range_end: "s0", count_only, linearizable} to any node
    Then the stream is one message with count 300 and no pairs
    When I send IterateRange {table: "regatta-test", key: "s/", range_end: "s0", count_only, limit: 10, linearizable} to any node
    Then the stream is one message with count 10 and no pairs
    And more is true on every message but the last, which has more true
    When I send IterateRange {table: "regatta-test", key: "s/", range_end: "s0", keys_only, linearizable} to any node
    Then the stream carries 300 pairs from "s/" in ascending key order
    And every pair of the stream has a key and no value

  Scenario: A single key, "\x00" ranges and an empty result
    Given table "regatta-test" holds "a=1, b=2, c=3"
    When I send IterateRange {table: "regatta-test", key: "b", linearizable} to any node
    Then the stream has 1 message
    And the stream's pairs are "b=2"
    When I send IterateRange {table: "regatta-test", key: "b", range_end: "\x00", linearizable} to any node
    Then the stream's pairs are "b=2, c=3"
    When I send IterateRange {table: "regatta-test", key: "\x00", range_end: "\x00", linearizable} to any node
    Then the stream's pairs are "a=1, b=2, c=3"
    When I send IterateRange {table: "regatta-test", key: "x", range_end: "y", linearizable} to any node
    Then the stream is one message with count 0 and no pairs
    And more is true on every message but the last, which has more false
    And every message has a header with the same revision

  Scenario: The stream is one view of the table while a writer changes the range
    Given table "regatta-test" holds 20 keys from "v/" with values of 1000000 bytes
    When I open IterateRange {table: "regatta-test", key: "v/", range_end: "v0", linearizable} on node 1 and read 1 message
    And I put "v/99999" = "new" into "regatta-test" on node 2
    And I delete "v/00010" from "regatta-test" on node 3
    And I read the rest of the stream
    Then the stream carries 20 pairs from "v/" in ascending key order
    And every message has a header with the same revision
    When I send IterateRange {table: "regatta-test", key: "v/00010", linearizable} to any node
    Then the stream is one message with count 0 and no pairs

  Scenario: A client that stops reading halfway leaves the node serving
    Given table "regatta-test" holds 20 keys from "v/" with values of 1000000 bytes
    When I open IterateRange {table: "regatta-test", key: "v/", range_end: "v0", linearizable} on node 2 and read 1 message
    And I stop reading the stream
    And I put "after" = "1" into "regatta-test" on node 2
    Then the request succeeds
    When I send IterateRange {table: "regatta-test", key: "after", linearizable} to node 2
    Then the stream's pairs are "after=1"

  Scenario Outline: Range's checks, in order, before any message
    When I send IterateRange {<request>} to any node
    Then the error is <code> "<message>"

    Examples:
      | request                                                              | code            | message                                                    |
      | table: "", key: "", limit: -1, keys_only, count_only                 | InvalidArgument | limit must be a positive number                            |
      | table: "", key: "", keys_only, count_only                            | InvalidArgument | keys_only and count_only must not be set at the same time  |
      | table: "", key: "a"                                                  | InvalidArgument | table must be set                                          |
      | table: "regatta-test", key: ""                                       | InvalidArgument | key must be set                                            |
      | table: "nope", key: 1025 bytes of "k"                                | NotFound        | table not found                                            |
      | table: "regatta-test", key: 1025 bytes of "k"                        | InvalidArgument | key length exceeded max allowed value                      |
      | table: "regatta-test", key: "a", range_end: 1025 bytes of "k"        | InvalidArgument | key length exceeded max allowed value                      |

  @needs-follower-cluster
  Scenario: A follower cluster streams from its own copy
    Given table "regatta-test" holds "a=1, b=2, c=3"
    And a follower cluster of 3 nodes following it
    Then every follower node eventually holds "c" = "3" in "regatta-test"
    When I send IterateRange {table: "regatta-test", key: "a", range_end: "\x00"} to follower node 2
    Then the stream's pairs are "a=1, b=2, c=3"
    And more is true on every message but the last, which has more false
    And every message has a header with the same revision
