@kv @regatta-2022
Feature: Tables
  Tables are created on the leader cluster by --tables.names at start and
  deleted by --tables.delete; the catalogue is replicated, so every node
  agrees. Shard ids start at 10001 and are never reused.

  # Wording: "I get" is a serializable Range (the node answers from its own
  # copy, which may trail the leader); "I read" is a linearizable one (it
  # reflects every write acknowledged before it began).

  Scenario: Tables named at start exist on every node, others do not
    Given a leader cluster of 3 nodes with tables "alpha,beta"
    When I get "k" from "alpha" on node 1
    Then the request succeeds
    When I get "k" from "beta" on node 3
    Then the request succeeds
    When I get "k" from "gamma" on node 2
    Then the error is NotFound "table not found"
    When I put "k" = "v" into "gamma" on node 1
    Then the error is NotFound "table not found"

  Scenario: Tables keep their data apart
    Given a leader cluster of 3 nodes with tables "alpha,beta"
    And table "alpha" holds "k=in-alpha"
    And table "beta" holds "k=in-beta"
    When I delete from "\x00" to "\x00" in "alpha" on any node
    Then 1 key was deleted
    And a linearizable range from "\x00" to "\x00" over "beta" on any node returns "k=in-beta"
    And a linearizable range from "\x00" to "\x00" over "alpha" on any node returns "(none)"

  @restart @needs-faults @needs-flags
  Scenario: A table added at a restart appears on every node
    Given a leader cluster of 3 nodes with tables "alpha"
    When node 2 is stopped
    And node 2 is restarted with flags "--tables.names=alpha,gamma"
    Then within 20 seconds every node serves table "gamma"
    When I put "k" = "v" into "gamma" on node 1
    Then the request succeeds

  @restart @needs-faults @needs-flags
  Scenario: A table deleted at a restart disappears from every node; a new one never reuses its shard
    Given a leader cluster of 3 nodes with tables "alpha,beta"
    And table "beta" holds "k=old"
    When I get "k" from "beta" on node 1
    Then the shard id is remembered as "old_beta"
    When node 1 is stopped
    And node 1 is restarted with flags "--tables.delete=beta"
    Then within 20 seconds a range over "beta" on every node fails with NotFound "table not found"
    When node 3 is stopped
    And node 3 is restarted with flags "--tables.names=alpha,beta"
    Then within 20 seconds every node serves table "beta"
    When I read "k" from "beta" on node 2
    Then the response has pairs "(none)"
    And the shard id is greater than "old_beta"
