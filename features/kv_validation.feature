@kv @regatta-2022
Feature: Request validation
  Range, Put, DeleteRange and Txn requests are checked in a fixed order: the
  first failing check answers, with the exact code and message. Keys of exactly 1024 bytes and
  values of exactly 2 MiB are accepted. A refused request changes nothing.

  Background:
    Given a leader cluster of 3 nodes with tables "regatta-test"

  Scenario Outline: Range checks, in order
    When I send Range {<request>} to any node
    Then the error is <code> "<message>"

    Examples:
      | request                                                              | code            | message                                                    |
      | table: "", key: "", limit: -1, keys_only, count_only                 | InvalidArgument | limit must be a positive number                            |
      | table: "", key: "", keys_only, count_only                            | InvalidArgument | keys_only and count_only must not be set at the same time  |
      | table: "", key: ""                                                   | InvalidArgument | table must be set                                          |
      | table: "", key: "a"                                                  | InvalidArgument | table must be set                                          |
      | table: "regatta-test", key: ""                                       | InvalidArgument | key must be set                                            |
      | table: "nope", key: ""                                               | InvalidArgument | key must be set                                            |
      | table: "nope", key: 1025 bytes of "k"                                | NotFound        | table not found                                            |
      | table: "regatta-test", key: 1025 bytes of "k"                        | InvalidArgument | key length exceeded max allowed value                      |
      | table: "regatta-test", key: "a", range_end: 1025 bytes of "k"        | InvalidArgument | key length exceeded max allowed value                      |

  Scenario Outline: Put checks, in order
    When I send Put {<request>} to any node
    Then the error is <code> "<message>"

    Examples:
      | request                                                                    | code            | message                                 |
      | table: "", key: "", value: 2097153 bytes of "v"                            | InvalidArgument | table must be set                       |
      | table: "regatta-test", key: "", value: 2097153 bytes of "v"                | InvalidArgument | key must be set                         |
      | table: "nope", key: 1025 bytes of "k", value: 2097153 bytes of "v"         | NotFound        | table not found                         |
      | table: "regatta-test", key: 1025 bytes of "k", value: 2097153 bytes of "v" | InvalidArgument | key length exceeded max allowed value   |
      | table: "regatta-test", key: "k", value: 2097153 bytes of "v"               | InvalidArgument | value length exceeded max allowed value |

  Scenario Outline: DeleteRange checks, in order
    When I send DeleteRange {<request>} to any node
    Then the error is <code> "<message>"

    Examples:
      | request                                                          | code            | message                               |
      | table: "", key: ""                                               | InvalidArgument | table must be set                     |
      | table: "regatta-test", key: ""                                   | InvalidArgument | key must be set                       |
      | table: "nope", key: 1025 bytes of "k"                            | NotFound        | table not found                       |
      | table: "regatta-test", key: 1025 bytes of "k"                    | InvalidArgument | key length exceeded max allowed value |
      | table: "regatta-test", key: "a", range_end: 1025 bytes of "k"    | InvalidArgument | key length exceeded max allowed value |

  Scenario: Limits are inclusive: a 1024-byte key and a 2 MiB value are accepted
    When I send Put {table: "regatta-test", key: 1024 bytes of "k", value: 2097152 bytes of "v"} to any node
    Then the request succeeds
    When I send Range {table: "regatta-test", key: 1024 bytes of "k", range_end: 1024 bytes of "l", linearizable} to any node
    Then the response holds 1 pairs
    When I send DeleteRange {table: "regatta-test", key: 1024 bytes of "k", range_end: 1024 bytes of "l"} to any node
    Then 1 key was deleted

  Scenario Outline: Txn checks: table first, then every op in order, success before failure, then compares
    When I send a Txn to "<table>" on any node with:
      | part    | op      | key     | range_end | value   | flags   |
      | compare | EQUAL   | <ckey>  | <cend>    | x       |         |
      | success | <s1>    | <s1key> |           | v       | <s1f>   |
      | success | put     | ok      |           | <s2val> |         |
      | failure | <f1>    | <f1key> | <f1end>   |         | <f1f>   |
    Then the error is <code> "<message>"
    And no node holds "ok" in "regatta-test"

    Examples:
      | table        | ckey              | cend              | s1    | s1key             | s1f                  | s2val                | f1     | f1key             | f1end             | f1f      | code            | message                                                   |
      | (empty)      | a                 |                   | range | a                 | limit=-1             | v                    | range  | a                 |                   |          | InvalidArgument | table must be set                                         |
      | nope         | a                 |                   | range | a                 | limit=-1             | v                    | range  | a                 |                   |          | NotFound        | table not found                                           |
      | regatta-test | a                 |                   | range | a                 | limit=-1             | v                    | range  | (empty)           |                   |          | InvalidArgument | limit must be a positive number                           |
      | regatta-test | a                 |                   | range | a                 | keys_only count_only | v                    | range  | a                 |                   |          | InvalidArgument | keys_only and count_only must not be set at the same time |
      | regatta-test | a                 |                   | range | (empty)           |                      | v                    | range  | a                 |                   | limit=-1 | InvalidArgument | key must be set                                           |
      | regatta-test | a                 |                   | put   | 1025 bytes of "k" |                      | v                    | range  | a                 |                   | limit=-1 | InvalidArgument | key length exceeded max allowed value                     |
      | regatta-test | a                 |                   | put   | a                 |                      | 2097153 bytes of "v" | range  | a                 |                   | limit=-1 | InvalidArgument | value length exceeded max allowed value                   |
      | regatta-test | a                 |                   | put   | a                 |                      | v                    | range  | a                 |                   | limit=-1 | InvalidArgument | limit must be a positive number                           |
      | regatta-test | a                 |                   | put   | a                 |                      | v                    | delete | (empty)           |                   |          | InvalidArgument | key must be set                                           |
      | regatta-test | a                 |                   | put   | a                 |                      | v                    | delete | a                 | 1025 bytes of "k" |          | InvalidArgument | key length exceeded max allowed value                     |
      | regatta-test | 1025 bytes of "k" |                   | put   | a                 |                      | v                    | range  | a                 |                   |          | InvalidArgument | key length exceeded max allowed value                     |
      | regatta-test | a                 |                   | put   | (empty)           |                      | v                    | range  | a                 |                   | limit=-1 | InvalidArgument | key must be set                                           |
      | regatta-test | a                 |                   | range | 1025 bytes of "k" |                      | v                    | range  | a                 |                   | limit=-1 | InvalidArgument | key length exceeded max allowed value                     |
      | regatta-test | a                 |                   | put   | a                 |                      | v                    | range  | a                 | 1025 bytes of "k" |          | InvalidArgument | key length exceeded max allowed value                     |
      | regatta-test | a                 |                   | put   | a                 |                      | v                    | delete | 1025 bytes of "k" |                   |          | InvalidArgument | key length exceeded max allowed value                     |
      | regatta-test | a                 | 1025 bytes of "k" | put   | a                 |                      | v                    | range  | a                 |                   |          | InvalidArgument | key length exceeded max allowed value                     |

  Scenario: An empty compare key is a key that does not exist
    When I send a Txn to "regatta-test" on any node with:
      | part    | op     | key     | range_end | value | flags |
      | compare | EXISTS | (empty) |           |       |       |
      | failure | put    | seen    |           | yes   |       |
    Then the Txn takes the failure branch with responses:
      | put |
