@tls @regatta-2022
Feature: TLS on every listener
  A node serves TLS on its API and REST listeners (--api.cert-filename),
  its maintenance listener and its replication listener from certificate
  files, and reads renewed files without a restart. With a CA on a leader's
  replication listener, only followers that show a client certificate that
  CA signed get anything (mutual TLS, as Regatta's --replication.ca-filename).
  The clusters of these scenarios get certificates of an authority made for
  the scenario; every other step then speaks TLS to them.

  @needs-flags
  Scenario: Every listener of a leader cluster serves TLS; plaintext and untrusted clients are refused
    Given a leader cluster of 3 nodes with tables "regatta-test" serving TLS on every listener
    When I put "k" = "v" into "regatta-test" on node 1
    Then the request succeeds
    And every node eventually holds "k" = "v" in "regatta-test"
    And node 2 answers GET /healthz over TLS with 200
    And a plaintext client is refused by the API of node 1 (table "regatta-test")
    And a client that trusts another authority is refused by the API of node 3 (table "regatta-test")
    When I call Metadata.Get on the maintenance API of node 3 without authorization
    Then the maintenance call succeeds
    And no node's log contains "PRIVATE KEY"

  @needs-follower-cluster @needs-flags
  Scenario: A follower with a client certificate of the leader's authority replicates over mutual TLS
    Given a leader cluster of 1 node with tables "regatta-test" serving TLS on every listener
    And table "regatta-test" holds "a=1"
    And a follower cluster of 1 node serving TLS following it, with a client certificate
    Then every follower node eventually holds "a" = "1" in "regatta-test"
    And follower node 1 answers GET /healthz over TLS with 200

  @needs-follower-cluster @needs-flags
  Scenario: A follower without a client certificate gets nothing from a leader that asks for one
    Given a leader cluster of 1 node with tables "regatta-test" serving TLS on every listener
    And table "regatta-test" holds "a=1"
    And a follower cluster of 1 node serving TLS following it, without a client certificate
    Then for 5 seconds follower node 1 has no table "regatta-test"

  @needs-flags
  Scenario: Renewed certificates are served without a restart
    Given a leader cluster of 1 node with tables "regatta-test" serving TLS on every listener
    When every node's certificate is renewed by a new authority
    Then within 10 seconds a client that trusts only the new authority reads "regatta-test" on node 1
    And a client that trusts only the replaced authority is refused by the API of node 1 (table "regatta-test")
    And node 1 answers GET /healthz over TLS with 200
