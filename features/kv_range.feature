@kv @regatta-2022
Feature: Range
  Range reads one key or a half-open interval [key, range_end) in unsigned
  byte order; range_end "\x00" means every key from key on, and range_end at
  or before key is an empty range. limit caps the pairs (0: no cap) and more
  says whether the range holds others; count is the number of pairs the
  answer covers; count_only returns only it, keys_only the keys without
  values. A linearizable read sees every write acknowledged before it began.

  # Wording: "I get" is a serializable Range (the node answers from its own
  # copy, which may trail the leader); "I read" is a linearizable one (it
  # reflects every write acknowledged before it began).

  Background:
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "a=1, b=2, c=3, d=4, e=5"

  Scenario: A single key
    When I read "c" from "regatta-test" on any node
    Then the response has pairs "c=3"
    And count is 1
    And more is false

  @fixed
  Scenario: A missing single key is a success with no pairs
    When I read "zz" from "regatta-test" on any node
    Then the request succeeds
    And the response has pairs "(none)"
    And count is 0
    And more is false

  Scenario: A half-open interval excludes range_end
    Then a linearizable range from "b" to "d" over "regatta-test" on any node returns "b=2, c=3"

  Scenario: range_end at or before key is an empty range, not an error
    Then a linearizable range from "d" to "b" over "regatta-test" on any node returns "(none)"
    And a linearizable range from "c" to "c" over "regatta-test" on any node returns "(none)"

  Scenario: range_end "\x00" reads every key from key on
    Then a linearizable range from "c" to "\x00" over "regatta-test" on any node returns "c=3, d=4, e=5"

  Scenario: key and range_end both "\x00" read the whole table
    # A serializable read may trail the leader: wait until node 1 caught up.
    Then node 1 eventually holds "e" = "5" in "regatta-test"
    And a serializable range from "\x00" to "\x00" over "regatta-test" on node 1 returns "a=1, b=2, c=3, d=4, e=5"

  Scenario: A prefix query uses the prefix with its last byte incremented
    Given table "regatta-test" holds "p/1=x, p/2=y, p0=z, p\xff=w, q=v"
    Then a linearizable range from "p/" to "p0" over "regatta-test" on any node returns "p/1=x, p/2=y"
    And a linearizable range from "p\xff" to "q" over "regatta-test" on any node returns "p\xff=w"

  Scenario: Keys sort as unsigned bytes
    Given table "regatta-test" holds "\x80=high, \x01=low, \xff=top, \x7f=mid"
    Then a linearizable range from "\x00" to "\x00" over "regatta-test" on any node returns "\x01=low, a=1, b=2, c=3, d=4, e=5, \x7f=mid, \x80=high, \xff=top"
    And a linearizable range from "\x7f" to "\x00" over "regatta-test" on any node returns "\x7f=mid, \x80=high, \xff=top"
    And a linearizable range from "\x00" to "\x80" over "regatta-test" on any node returns "\x01=low, a=1, b=2, c=3, d=4, e=5, \x7f=mid"

  @fixed
  Scenario: limit returns the first pairs and more says there are others
    When I send Range {table: "regatta-test", key: "a", range_end: "\x00", limit: 2, linearizable} to any node
    Then the response has pairs "a=1, b=2"
    And more is true
    And count is 2

  @fixed
  Scenario: more is false when the limit covers exactly what is left
    When I send Range {table: "regatta-test", key: "b", range_end: "\x00", limit: 4, linearizable} to any node
    Then the response has pairs "b=2, c=3, d=4, e=5"
    And more is false

  Scenario: limit 0 means no limit
    When I send Range {table: "regatta-test", key: "a", range_end: "\x00", limit: 0, linearizable} to any node
    Then the response holds 5 pairs
    And more is false
    And count is 5

  Scenario: count_only returns only the count
    When I send Range {table: "regatta-test", key: "b", range_end: "e", count_only, linearizable} to any node
    Then the response has pairs "(none)"
    And count is 3

  Scenario: count_only with a limit counts at most limit pairs
    When I send Range {table: "regatta-test", key: "a", range_end: "\x00", count_only, limit: 2, linearizable} to any node
    Then count is 2
    And more is true

  Scenario: keys_only returns the keys without their values
    When I send Range {table: "regatta-test", key: "a", range_end: "c", keys_only, linearizable} to any node
    Then the response has keys "a, b" without values
    And count is 2

  Scenario: A linearizable read on any node sees a write acknowledged by another
    When I put "fresh" = "new" into "regatta-test" on node 3
    Then the request succeeds
    When I read "fresh" from "regatta-test" on node 1
    Then the response has pairs "fresh=new"
    When I read "fresh" from "regatta-test" on node 2
    Then the response has pairs "fresh=new"

  Scenario: A serializable read is served by every node, leader or not
    Then every node eventually holds "e" = "5" in "regatta-test"
    When I get "a" from "regatta-test" on a follower
    Then the response has pairs "a=1"
