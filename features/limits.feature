@kv @regatta-2022
Feature: Message limits
  Requests up to 4 MiB are accepted and larger ones are refused by the
  transport with ResourceExhausted; a response never exceeds the message
  limit: the server returns fewer pairs and sets more.

  Background:
    Given a leader cluster of 3 nodes with tables "regatta-test"

  Scenario: A request over 4 MiB is refused with ResourceExhausted
    When I send Put {table: "regatta-test", key: "big", value: 5000000 bytes of "v"} to any node
    Then the error is ResourceExhausted
    And no node holds "big" in "regatta-test"

  @fixed
  Scenario: A response that would exceed the limit stops short and sets more
    Given table "regatta-test" holds "k1=2000000 bytes of "a", k2=2000000 bytes of "b", k3=2000000 bytes of "c""
    When I send Range {table: "regatta-test", key: "k", range_end: "l", linearizable} to any node
    Then the response holds fewer than 3 pairs
    And more is true
    When I send Range {table: "regatta-test", key: "k3", range_end: "l", linearizable} to any node
    Then the response holds 1 pairs
    And more is false

  Scenario: count_only counts every pair however large the values
    Given table "regatta-test" holds "k1=2000000 bytes of "a", k2=2000000 bytes of "b", k3=2000000 bytes of "c""
    When I send Range {table: "regatta-test", key: "k", range_end: "l", count_only, linearizable} to any node
    Then count is 3
    And more is false

  Scenario: keys_only lists every key however large the values
    Given table "regatta-test" holds "k1=2000000 bytes of "a", k2=2000000 bytes of "b", k3=2000000 bytes of "c""
    When I send Range {table: "regatta-test", key: "k", range_end: "l", keys_only, linearizable} to any node
    Then the response has keys "k1, k2, k3" without values
    And more is false
