@observability @regatta-2022
Feature: What operators watch
  Every node answers GET /healthz on its REST listener (200 once it serves
  its tables) and compresses responses with gzip or zstd for a client that
  accepts them. A follower cluster runs exactly one replication worker per
  table, exports its replication lag, restarts a worker that makes no
  progress while the leader cluster has newer entries, and serves no
  replication API of its own. Scenarios tagged @metrics read this implementation's metric names
  (docs/operations.md); another server may leave them out.

  Scenario: Every node answers GET /healthz with 200
    Given a leader cluster of 3 nodes with tables "regatta-test"
    Then node 1 answers GET /healthz with 200
    And node 2 answers GET /healthz with 200
    And node 3 answers GET /healthz with 200

  Scenario: Responses are compressed with gzip or zstd when the client accepts it
    Given a leader cluster of 1 node with tables "regatta-test"
    And table "regatta-test" holds "k=4096 bytes of "z""
    Then a Range of "k" in "regatta-test" on node 1 accepting gzip is answered in gzip with "4096 bytes of "z""
    And a Range of "k" in "regatta-test" on node 1 accepting zstd is answered in zstd with "4096 bytes of "z""

  @replication @metrics @needs-follower-cluster
  Scenario: A follower cluster runs one worker per table, reports its lag and serves no replication API
    Given a leader cluster of 3 nodes with tables "regatta-test,second"
    And a follower cluster of 3 nodes following it
    When I write 20 keys "k" into "regatta-test"
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    And exactly one follower node replicates "regatta-test"
    And exactly one follower node replicates "second"
    And the follower cluster's replication lag of "regatta-test" eventually is 0
    And follower node 1 serves no replication API for "regatta-test"
    And follower node 2 answers GET /healthz with 200

  @replication @metrics @faults @needs-faults @needs-follower-cluster
  Scenario: A worker that makes no progress while the leader cluster has newer entries is restarted
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And a follower cluster of 3 nodes following it
    When I write 10 keys "before-" into "regatta-test"
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    And exactly one follower node replicates "regatta-test"
    And no follower node has restarted a worker of "regatta-test"
    When every follower node but the one that replicates "regatta-test" is killed
    And I write 10 keys "during-" into "regatta-test"
    Then the follower node that replicates "regatta-test" eventually restarts its worker
    When the killed follower nodes are restarted
    Then every follower node eventually holds every acknowledged write to "regatta-test"
