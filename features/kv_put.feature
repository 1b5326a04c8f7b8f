@kv @regatta-2022
Feature: Put
  Put upserts one key of a table. With prev_kv the answer carries the pair
  the put replaced, and no pair when the key did not exist. Empty values and
  binary keys are allowed.

  Background:
    Given a leader cluster of 3 nodes with tables "regatta-test"

  Scenario: A put on one node is visible on every node
    When I put "greeting" = "hello" into "regatta-test" on node 2
    Then the request succeeds
    And a linearizable range from "greeting" to "" over "regatta-test" on node 1 returns "greeting=hello"
    And a linearizable range from "greeting" to "" over "regatta-test" on node 3 returns "greeting=hello"
    And every node eventually holds "greeting" = "hello" in "regatta-test"

  Scenario: A second put replaces the value and returns the previous pair
    Given table "regatta-test" holds "k=one"
    When I put "k" = "two" into "regatta-test" on any node with prev_kv
    Then the previous pair is "k" = "one"
    And a linearizable range from "k" to "" over "regatta-test" on any node returns "k=two"

  Scenario: A put of a new key with prev_kv has no previous pair
    When I put "fresh" = "v" into "regatta-test" on any node with prev_kv
    Then the request succeeds
    And there is no previous pair

  Scenario: A put without prev_kv returns no previous pair
    Given table "regatta-test" holds "k=one"
    When I put "k" = "two" into "regatta-test" on any node
    Then there is no previous pair

  Scenario: An empty value is stored and read back as empty
    When I put "empty" = "(empty)" into "regatta-test" on any node
    Then the request succeeds
    And a linearizable range from "empty" to "" over "regatta-test" on any node returns "empty=(empty)"
    And count is 1

  Scenario: Binary keys and values keep every byte
    When I put "\x00\xff\x01" = "\xff\x00" into "regatta-test" on node 1
    Then the request succeeds
    And a linearizable range from "\x00\xff\x01" to "" over "regatta-test" on node 3 returns "\x00\xff\x01=\xff\x00"

  Scenario: Puts sent to every node all land
    When I put "a" = "1" into "regatta-test" on node 1
    And I put "b" = "2" into "regatta-test" on node 2
    And I put "c" = "3" into "regatta-test" on node 3
    Then a linearizable range from "a" to "\x00" over "regatta-test" on node 2 returns "a=1, b=2, c=3"
