@kv @regatta-2022
Feature: DeleteRange
  DeleteRange removes one key or a range. Deleting what does not exist
  succeeds. deleted counts the keys removed; with prev_kv, prev_kvs holds
  every removed pair in ascending key order.

  Background:
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "a=1, b=2, c=3, d=4, e=5"

  @fixed
  Scenario: Deleting one key removes it from every node
    When I delete "b" from "regatta-test" on node 3
    Then 1 key was deleted
    And no node holds "b" in "regatta-test"
    And a linearizable range from "a" to "\x00" over "regatta-test" on node 1 returns "a=1, c=3, d=4, e=5"

  Scenario: Deleting a missing key succeeds and deletes nothing
    When I delete "zz" from "regatta-test" on any node
    Then the request succeeds
    And 0 keys were deleted

  @fixed
  Scenario: Deleting a range with prev_kv returns the removed pairs in order
    When I delete from "b" to "e" in "regatta-test" on any node with prev_kv
    Then 3 keys were deleted
    And the deleted pairs are "b=2, c=3, d=4"
    And a linearizable range from "\x00" to "\x00" over "regatta-test" on any node returns "a=1, e=5"

  Scenario: Without prev_kv no pairs come back
    When I delete from "a" to "c" in "regatta-test" on any node
    Then 2 keys were deleted
    And the deleted pairs are "(none)"

  Scenario: range_end "\x00" deletes every key from key on
    When I delete from "c" to "\x00" in "regatta-test" on any node
    Then 3 keys were deleted
    And a linearizable range from "\x00" to "\x00" over "regatta-test" on any node returns "a=1, b=2"

  Scenario: Deleting the whole table
    When I delete from "\x00" to "\x00" in "regatta-test" on any node with prev_kv
    Then 5 keys were deleted
    And the deleted pairs are "a=1, b=2, c=3, d=4, e=5"
    And a linearizable range from "\x00" to "\x00" over "regatta-test" on any node returns "(none)"

  Scenario: An empty range deletes nothing
    When I delete from "d" to "b" in "regatta-test" on any node
    Then 0 keys were deleted
    And a linearizable range from "\x00" to "\x00" over "regatta-test" on any node returns "a=1, b=2, c=3, d=4, e=5"

  Scenario: A deleted key can be written again
    When I delete "a" from "regatta-test" on any node
    And I put "a" = "again" into "regatta-test" on any node
    Then every node eventually holds "a" = "again" in "regatta-test"
