@tables_api @regatta-0.5
Feature: Tables API
  Regatta 0.5's regatta.v1.Tables creates, deletes and lists tables at run
  time, on any node of a leader cluster. A created table serves on every
  node, a deleted one is gone from every node, and follower clusters follow
  both; a follower cluster lists its tables but creates and deletes none.
  Names are UTF-8 text of 1 to 1024 bytes, and no name, however odd,
  reaches the server's own state. With --tables.token every call needs the
  bearer token, checked first, with the maintenance token's messages.

  Scenario: A table created through the API serves on every node; deleted, it is gone from every node
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I create table "orders" on node 2
    Then the request succeeds
    And the created table's id is remembered as "orders_id"
    And within 10 seconds every node lists table "orders"
    And the new table "orders" takes a write and a read on every node
    When I list tables on node 3
    Then the listed tables include "orders, regatta-test"
    And the listed table "orders" has the id remembered as "orders_id"
    When I delete table "orders" on node 3
    Then the request succeeds
    And within 10 seconds a range over "orders" on every node fails with NotFound "table not found"
    And within 10 seconds no node lists table "orders"
    When I put "k" = "v" into "orders" on node 1
    Then the error is NotFound "table not found"
    When I list tables on node 1
    Then the listed tables include "regatta-test"
    And the listed tables do not include "orders"

  Scenario: A table named at start is deleted through the API like any other, and created again starts empty
    Given a leader cluster of 3 nodes with tables "regatta-test,other"
    And table "other" holds "k=v"
    When I delete table "other" on node 1
    Then the request succeeds
    And within 10 seconds a range over "other" on every node fails with NotFound "table not found"
    And within 10 seconds no node lists table "other"
    When I put "k" = "v" into "regatta-test" on node 2
    Then the request succeeds
    When I create table "other" on node 3
    Then the request succeeds
    And within 10 seconds every node serves table "other"
    And a linearizable range from "\x00" to "\x00" over "other" on node 1 returns "(none)"

  Scenario: Create and Delete refuse bad requests with Regatta's codes and messages
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I create table "regatta-test" on node 1
    Then the error is InvalidArgument "table already exists"
    When I create table "orders" on node 2
    Then the request succeeds
    When I create table "orders" on node 3
    Then the error is InvalidArgument "table already exists"
    When I create table "(empty)" on node 1
    Then the error is InvalidArgument "name must be set"
    When I delete table "(empty)" on node 2
    Then the error is InvalidArgument "name must be set"
    When I delete table "nope" on node 3
    Then the error is InvalidArgument "table not found"
    When I create table "1024 bytes of "n"" on node 1
    Then the request succeeds
    And the new table "1024 bytes of "n"" takes a write and a read on every node
    When I list tables on node 2
    Then the listed tables include "1024 bytes of "n", orders, regatta-test"
    When I delete table "1024 bytes of "n"" on node 3
    Then the request succeeds
    When I delete table "orders" on node 1
    Then the request succeeds

  @extension
  Scenario: A name longer than 1024 bytes is refused (Regatta 0.5 took any length)
    Given a leader cluster of 1 node with tables "regatta-test"
    When I create table "1025 bytes of "n"" on node 1
    Then the error is InvalidArgument "name length exceeded max allowed value"
    When I delete table "1025 bytes of "n"" on node 1
    Then the error is InvalidArgument "name length exceeded max allowed value"
    When I list tables on node 1
    Then the listed tables do not include "1025 bytes of "n""

  Scenario: Names the server once reserved, path-like names and names with NUL bytes are ordinary tables
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I create these tables on node 1:
      | \\x00catalogue      |
      | catalogue           |
      | \\x00catalogue\\x00 |
      | \\x00               |
      | a\\x00b             |
      | ..                  |
      | /                   |
      | a/../b              |
      | tåble               |
    Then each of these new tables takes a write and a read on every node:
      | \\x00catalogue      |
      | catalogue           |
      | \\x00catalogue\\x00 |
      | \\x00               |
      | a\\x00b             |
      | ..                  |
      | /                   |
      | a/../b              |
      | tåble               |
    When I list tables on node 2
    Then the listed tables include "\x00, \x00catalogue, \x00catalogue\x00, .., /, a\x00b, a/../b, catalogue, regatta-test, tåble"
    When I read "probe-1" from "regatta-test" on node 3
    Then the response has pairs "(none)"
    When I create table "regatta-test" on node 3
    Then the error is InvalidArgument "table already exists"
    When I delete table "\x00catalogue" on node 3
    Then the request succeeds
    And within 10 seconds no node lists table "\x00catalogue"
    And within 10 seconds every node lists table "catalogue"
    And within 10 seconds every node lists table "regatta-test"
    When I send Range {table: "\x00catalogue\x00", key: "probe-2", linearizable} to node 1
    Then the response has pairs "probe-2=from node 2"
    When I delete these tables on node 2:
      | catalogue           |
      | \\x00catalogue\\x00 |
      | \\x00               |
      | a\\x00b             |
      | ..                  |
      | /                   |
      | a/../b              |
      | tåble               |
    And I list tables on node 2
    Then the listed tables include "regatta-test"
    And the listed tables do not include "\x00, \x00catalogue, \x00catalogue\x00, .., /, a\x00b, a/../b, catalogue, tåble"
    When I put "k" = "v" into "regatta-test" on node 2
    Then the request succeeds

  @restart @needs-faults
  Scenario: Tables created through the API, one named like the old catalogue, survive a restart of every node
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I create table "\x00catalogue" on node 1
    Then the request succeeds
    When I create table "orders" on node 2
    Then the request succeeds
    And the new table "\x00catalogue" takes a write and a read on every node
    And the new table "orders" takes a write and a read on every node
    When I send Put {table: "\x00catalogue", key: "kept", value: "before"} to node 3
    Then the request succeeds
    When every node is killed
    And every node is restarted
    Then within 30 seconds every node lists table "\x00catalogue"
    And within 30 seconds every node lists table "orders"
    And within 30 seconds every node serves table "orders"
    And the new table "\x00catalogue" takes a write and a read on every node
    When I send Range {table: "\x00catalogue", key: "kept", linearizable} to node 2
    Then the response has pairs "kept=before"
    And a linearizable range from "\x00" to "\x00" over "orders" on node 1 returns "probe-1=from node 1, probe-2=from node 2, probe-3=from node 3"
    When I create table "orders" on node 3
    Then the error is InvalidArgument "table already exists"

  Scenario: A table deleted and created again under the same name starts empty, with a new id
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I create table "orders" on node 1
    Then the request succeeds
    And the created table's id is remembered as "first"
    And within 10 seconds every node serves table "orders"
    When I put "a" = "1" into "orders" on node 2
    And I put "b" = "2" into "orders" on node 3
    Then a linearizable range from "\x00" to "\x00" over "orders" on node 1 returns "a=1, b=2"
    When I delete table "orders" on node 2
    Then the request succeeds
    When I create table "orders" on node 3
    Then the request succeeds
    And the created table's id is greater than "first"
    And within 10 seconds every node serves table "orders"
    And a linearizable range from "\x00" to "\x00" over "orders" on node 1 returns "(none)"
    And a linearizable range from "\x00" to "\x00" over "orders" on node 2 returns "(none)"
    And a linearizable range from "\x00" to "\x00" over "orders" on node 3 returns "(none)"
    When I put "c" = "3" into "orders" on node 2
    Then the request succeeds
    And a linearizable range from "\x00" to "\x00" over "orders" on node 1 returns "c=3"
    When I delete table "orders" on node 1
    Then the request succeeds

  @needs-flags
  Scenario: With --tables.token every call needs the bearer token, checked before anything else
    Given a leader cluster of 1 node with tables "regatta-test" and flags "--tables.token=s3cret --maintenance.token=other"
    When I list tables on node 1 without authorization
    Then the error is Unauthenticated "Request unauthenticated with bearer"
    When I list tables on node 1 with authorization "Basic s3cret"
    Then the error is Unauthenticated "Request unauthenticated with bearer"
    When I list tables on node 1 with authorization "Bearer"
    Then the error is Unauthenticated "Bad authorization string"
    When I list tables on node 1 with authorization "Bearer wrong"
    Then the error is Unauthenticated "Invalid token"
    When I list tables on node 1 with authorization "Bearer other"
    Then the error is Unauthenticated "Invalid token"
    When I create table "(empty)" on node 1 without authorization
    Then the error is Unauthenticated "Request unauthenticated with bearer"
    When I create table "regatta-test" on node 1 with authorization "Bearer wrong"
    Then the error is Unauthenticated "Invalid token"
    When I delete table "nope" on node 1 with authorization "Basic s3cret"
    Then the error is Unauthenticated "Request unauthenticated with bearer"
    When I delete table "regatta-test" on node 1 with authorization "Bearer wrong"
    Then the error is Unauthenticated "Invalid token"
    When I create table "orders" on node 1 with authorization "Bearer s3cret"
    Then the request succeeds
    When I list tables on node 1 with authorization "bearer s3cret"
    Then the listed tables include "orders, regatta-test"
    And no node's log contains "s3cret"
    When I put "k" = "v" into "orders" on node 1
    Then the request succeeds
    When I delete table "orders" on node 1 with authorization "Bearer s3cret"
    Then the request succeeds
    When I list tables on node 1 with authorization "Bearer s3cret"
    Then the listed tables do not include "orders"

  @needs-flags
  Scenario: With --tables.enabled=false the server offers no Tables API
    Given a leader cluster of 1 node with tables "regatta-test" and flags "--tables.enabled=false"
    When I list tables on node 1
    Then the error is Unimplemented
    When I create table "orders" on node 1
    Then the error is Unimplemented
    When I read "k" from "regatta-test" on node 1
    Then the request succeeds

  @replication @needs-follower-cluster
  Scenario: A follower cluster lists the leader's tables, refuses Create and Delete, and follows the API's changes
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes following it
    When I list tables on follower node 1
    Then the listed tables include "regatta-test"
    When I create table "orders" on follower node 2
    Then the error is Unimplemented "method Create not implemented for follower"
    When I create table "(empty)" on follower node 1
    Then the error is Unimplemented "method Create not implemented for follower"
    When I delete table "regatta-test" on follower node 3
    Then the error is Unimplemented "method Delete not implemented for follower"
    When I delete table "nope" on follower node 1
    Then the error is Unimplemented "method Delete not implemented for follower"
    When I list tables on node 1
    Then the listed tables do not include "orders"
    When I create table "orders" on node 1
    Then the request succeeds
    And within 30 seconds every follower node lists table "orders"
    And within 30 seconds every follower node serves table "orders"
    When I put "k" = "v" into "orders" on node 2
    Then every follower node eventually holds "k" = "v" in "orders"
    When I delete table "orders" on node 3
    Then the request succeeds
    And within 30 seconds no follower node lists table "orders"
    And within 30 seconds no follower node serves table "orders"
    When I list tables on follower node 2
    Then the listed tables include "regatta-test"
    And the listed tables do not include "orders"

  @replication @needs-follower-cluster
  Scenario: A table deleted and created again on the leader cluster starts empty on the follower cluster too
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes following it
    When I create table "orders" on node 1
    Then the request succeeds
    And within 10 seconds every node serves table "orders"
    When I put "old" = "1" into "orders" on node 2
    Then the request succeeds
    And every follower node eventually holds "old" = "1" in "orders"
    When I delete table "orders" on node 3
    Then the request succeeds
    When I create table "orders" on node 2
    Then the request succeeds
    And within 10 seconds every node serves table "orders"
    When I put "new" = "2" into "orders" on node 1
    Then the request succeeds
    And every follower node eventually holds "new" = "2" in "orders"
    And a serializable range from "\x00" to "\x00" over "orders" on follower node 1 returns "new=2"
    And a serializable range from "\x00" to "\x00" over "orders" on follower node 2 returns "new=2"
    And a serializable range from "\x00" to "\x00" over "orders" on follower node 3 returns "new=2"
