@kv @txn @regatta-2022
Feature: Txn
  A Txn evaluates its compares (a conjunction, in order) and runs the success
  or the failure branch atomically, each op seeing the ops before it.

  Background:
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "a=1, b=2, c=3, empty=(empty)"

  Scenario: No compares: the success branch runs
    When I send a Txn to "regatta-test" on any node with:
      | part    | op    | key | range_end | value | flags |
      | success | put   | x   |           | 10    |       |
      | success | range | x   |           |       |       |
    Then the Txn takes the success branch with responses:
      | put            |
      | range x=10     |

  Scenario: A compare that holds runs the success branch
    When I send a Txn to "regatta-test" on node 1 with:
      | part    | op     | key | range_end | value | flags   |
      | compare | EQUAL  | a   |           | 1     |         |
      | success | put    | a   |           | 11    | prev_kv |
      | failure | delete | a   |           |       |         |
    Then the Txn takes the success branch with responses:
      | put prev a=1 |
    And every node eventually holds "a" = "11" in "regatta-test"

  Scenario: A compare that fails runs the failure branch
    When I send a Txn to "regatta-test" on node 2 with:
      | part    | op     | key | range_end | value | flags   |
      | compare | EQUAL  | a   |           | 2     |         |
      | success | put    | a   |           | 11    |         |
      | failure | delete | a   |           |       | prev_kv |
    Then the Txn takes the failure branch with responses:
      | delete 1: a=1 |
    And no node holds "a" in "regatta-test"

  Scenario: Compares are a conjunction
    When I send a Txn to "regatta-test" on any node with:
      | part    | op    | key | range_end | value | flags |
      | compare | EQUAL | a   |           | 1     |       |
      | compare | EQUAL | b   |           | 9     |       |
      | success | put   | ok  |           | yes   |       |
    Then the Txn takes the failure branch with no responses
    And no node holds "ok" in "regatta-test"

  Scenario Outline: Value compares are byte-wise with the stored value on the left
    When I send a Txn to "regatta-test" on any node with:
      | part    | op        | key | range_end | value   | flags |
      | compare | <compare> | b   |           | <value> |       |
    Then the Txn takes the <branch> branch with no responses

    Examples:
      | compare   | value | branch  |
      | EQUAL     | 2     | success |
      | EQUAL     | 20    | failure |
      | NOT_EQUAL | 3     | success |
      | NOT_EQUAL | 2     | failure |
      | GREATER   | 1     | success |
      | GREATER   | 2     | failure |
      | GREATER   | 19    | success |
      | LESS      | 3     | success |
      | LESS      | 2     | failure |
      | LESS      | 2\\x00 | success |
      | LESS      | \\xff  | success |

  Scenario Outline: A single-key compare on a missing key is false whatever its result
    When I send a Txn to "regatta-test" on any node with:
      | part    | op        | key     | range_end | value | flags |
      | compare | <compare> | missing |           | x     |       |
    Then the Txn takes the failure branch with no responses

    Examples:
      | compare   |
      | EQUAL     |
      | NOT_EQUAL |
      | GREATER   |
      | LESS      |

  Scenario: A compare without a value tests existence
    When I send a Txn to "regatta-test" on any node with:
      | part    | op     | key     | range_end | value | flags |
      | compare | EXISTS | a       |           |       |       |
    Then the Txn takes the success branch with no responses
    When I send a Txn to "regatta-test" on any node with:
      | part    | op     | key     | range_end | value | flags |
      | compare | EXISTS | missing |           |       |       |
    Then the Txn takes the failure branch with no responses

  Scenario: A compare without a value on a range tests that the range is not empty
    When I send a Txn to "regatta-test" on any node with:
      | part    | op     | key | range_end | value | flags |
      | compare | EXISTS | a   | c         |       |       |
    Then the Txn takes the success branch with no responses
    When I send a Txn to "regatta-test" on any node with:
      | part    | op     | key | range_end | value | flags |
      | compare | EXISTS | x   | y         |       |       |
    Then the Txn takes the failure branch with no responses

  Scenario: An explicitly empty value compares against the empty string
    When I send a Txn to "regatta-test" on any node with:
      | part    | op    | key   | range_end | value   | flags |
      | compare | EQUAL | empty |           | (empty) |       |
    Then the Txn takes the success branch with no responses
    When I send a Txn to "regatta-test" on any node with:
      | part    | op      | key | range_end | value   | flags |
      | compare | GREATER | a   |           | (empty) |       |
    Then the Txn takes the success branch with no responses

  Scenario: A range compare holds when the range is non-empty and every key satisfies it
    When I send a Txn to "regatta-test" on any node with:
      | part    | op      | key | range_end | value | flags |
      | compare | GREATER | a   | d         | 0     |       |
    Then the Txn takes the success branch with no responses
    When I send a Txn to "regatta-test" on any node with:
      | part    | op   | key | range_end | value | flags |
      | compare | LESS | a   | d         | 3     |       |
    Then the Txn takes the failure branch with no responses
    When I send a Txn to "regatta-test" on any node with:
      | part    | op     | key | range_end | value | flags |
      | compare | EXISTS | x   | y         |       |       |
    Then the Txn takes the failure branch with no responses
    When I send a Txn to "regatta-test" on any node with:
      | part    | op      | key | range_end | value | flags |
      | compare | GREATER | x   | y         | 0     |       |
    Then the Txn takes the failure branch with no responses

  Scenario: Ops see the ops before them and the last write wins
    When I send a Txn to "regatta-test" on any node with:
      | part    | op     | key | range_end | value | flags   |
      | success | put    | a   |           | 100   |         |
      | success | range  | a   |           |       |         |
      | success | put    | a   |           | 200   | prev_kv |
      | success | delete | b   |           |       | prev_kv |
      | success | range  | a   | \\x00      |       |         |
    Then the Txn takes the success branch with responses:
      | put                                  |
      | range a=100                          |
      | put prev a=100                       |
      | delete 1: b=2                        |
      | range a=200, c=3, empty=(empty)      |
    And every node eventually holds "a" = "200" in "regatta-test"
    And no node holds "b" in "regatta-test"

  @fixed
  Scenario: A range op on a missing key gives an empty range response
    When I send a Txn to "regatta-test" on any node with:
      | part    | op    | key     | range_end | value | flags |
      | success | range | missing |           |       |       |
    Then the Txn takes the success branch with responses:
      | range (none); count 0 |

  Scenario: Range ops honour limit, keys_only and count_only
    When I send a Txn to "regatta-test" on any node with:
      | part    | op    | key | range_end | value | flags      |
      | success | range | a   | \\x00      |       | limit=2    |
      | success | range | a   | c         |       | count_only |
    Then the Txn takes the success branch with responses:
      | range a=1, b=2; count 2; more |
      | range (none); count 2         |

  Scenario: The branch is atomic: all its writes become visible together
    When I send a Txn to "regatta-test" on node 3 with:
      | part    | op  | key | range_end | value | flags |
      | success | put | t1  |           | x     |       |
      | success | put | t2  |           | y     |       |
      | success | put | t3  |           | z     |       |
    Then the Txn takes the success branch with responses:
      | put |
      | put |
      | put |
    And a linearizable range from "t" to "u" over "regatta-test" on node 1 returns "t1=x, t2=y, t3=z"
    And while a Txn putting "t1, t2, t3" into "regatta-test" is sent 30 times on node 3, readers on every node see all of its writes or none

  Scenario: A compare-and-swap lets exactly one of two writers win
    When I send a Txn to "regatta-test" on node 1 with:
      | part    | op    | key | range_end | value | flags |
      | compare | EQUAL | c   |           | 3     |       |
      | success | put   | c   |           | first |       |
    Then the Txn takes the success branch with responses:
      | put |
    When I send a Txn to "regatta-test" on node 2 with:
      | part    | op    | key | range_end | value  | flags |
      | compare | EQUAL | c   |           | 3      |       |
      | success | put   | c   |           | second |       |
    Then the Txn takes the failure branch with no responses
    And every node eventually holds "c" = "first" in "regatta-test"
    And in each of 20 rounds, of 3 writers racing to compare-and-swap "c" in "regatta-test" through different nodes, exactly one wins

  Scenario: A read-only Txn is linearizable on any node
    When I put "ro" = "seen" into "regatta-test" on node 1
    And I send a Txn to "regatta-test" on node 3 with:
      | part    | op    | key | range_end | value | flags |
      | compare | EXISTS | ro |           |       |       |
      | success | range | ro  |           |       |       |
      | failure | range | a   |           |       |       |
    Then the Txn takes the success branch with responses:
      | range ro=seen |
