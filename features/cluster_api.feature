@cluster_api @regatta-0.5
Feature: Cluster API
  Regatta 0.5's regatta.v1.Cluster describes the local cluster. MemberList
  names every member with its id, name (--memberlist.node-name), peer URL
  and client URL (--api.advertise-address) under the cluster's name
  (--memberlist.cluster-name, default "default"). Status gives the answering
  node's id and version, the Raft state of each of its tables (leader, term,
  last and applied index) and, when asked, its settings with every token
  masked. Leader and follower clusters both serve it, each for itself.
  (Regatta 0.5 itself learns members by gossip, so it
  needs its --memberlist flags to list every node.)

  Scenario: MemberList names every member of a 3-node cluster, alike on every node
    Given a leader cluster of 3 nodes with tables "regatta-test"
    Then within 10 seconds every node lists 3 members sorted by id, with distinct ids, names and peer URLs and a client URL each
    And within 10 seconds every node lists the same members
    When I ask node 2 for the member list
    Then the request succeeds
    And the member list is of cluster "default"

  @restart @needs-faults @needs-flags
  Scenario: Names and client URLs come from each node's flags and stay right across stops and restarts
    Given a leader cluster of 3 nodes with tables "regatta-test" and flags "--memberlist.cluster-name=eu-west"
    When node 1 is stopped
    And node 1 is restarted with flags "--memberlist.node-name=alpha --api.advertise-address=http://alpha.example:8443"
    And node 2 is stopped
    And node 2 is restarted with flags "--memberlist.node-name=beta --api.advertise-address=http://beta.example:8443"
    And node 3 is stopped
    And node 3 is restarted with flags "--memberlist.node-name=gamma --api.advertise-address=http://gamma.example:8443"
    Then within 30 seconds every node lists the members:
      | id | name  | client URL                |
      | 1  | alpha | http://alpha.example:8443 |
      | 2  | beta  | http://beta.example:8443  |
      | 3  | gamma | http://gamma.example:8443 |
    When I ask node 3 for the member list
    Then the member list is of cluster "eu-west"
    When node 2 is stopped
    And within 30 seconds a put of "k" = "v" into "regatta-test" on any node succeeds
    And node 2 is restarted with flags "--memberlist.node-name=beta --api.advertise-address=http://beta.example:8443"
    Then within 30 seconds every node lists the members:
      | id | name  | client URL                |
      | 1  | alpha | http://alpha.example:8443 |
      | 2  | beta  | http://beta.example:8443  |
      | 3  | gamma | http://gamma.example:8443 |
    And within 10 seconds every node lists the same members
    And every node eventually holds "k" = "v" in "regatta-test"

  @restart @extension @needs-faults @needs-flags
  Scenario: A stopped node stays listed as last heard of, named by its id by default (members come from Raft, not gossip)
    Given a leader cluster of 3 nodes with tables "regatta-test"
    Then within 10 seconds every node lists the members:
      | id | name | client URL            |
      | 1  | 1    | http://127.0.0.1:8443 |
      | 2  | 2    | http://127.0.0.1:8443 |
      | 3  | 3    | http://127.0.0.1:8443 |
    When node 3 is stopped
    Then for 5 seconds every node keeps listing the members:
      | id | name | client URL            |
      | 1  | 1    | http://127.0.0.1:8443 |
      | 2  | 2    | http://127.0.0.1:8443 |
      | 3  | 3    | http://127.0.0.1:8443 |
    When node 3 is restarted with flags "--memberlist.node-name=back --api.advertise-address=http://back.example:8443"
    Then within 30 seconds every node lists the members:
      | id | name | client URL                |
      | 1  | 1    | http://127.0.0.1:8443     |
      | 2  | 2    | http://127.0.0.1:8443     |
      | 3  | back | http://back.example:8443  |

  Scenario: Status gives the node's id and version and the Raft state of each of its tables
    Given a leader cluster of 3 nodes with tables "regatta-test,other"
    And table "regatta-test" holds "a=1, b=2"
    When I ask node 2 for its status
    Then the request succeeds
    And the status is that of node 2, with a version
    And the status covers tables "other, regatta-test"
    And the status carries no config
    And the status reports no errors
    And within 10 seconds every node's status names the leader and term of "regatta-test"
    And within 10 seconds every node's status names the leader and term of "other"
    When I remember the applied index of "regatta-test" on node 3 as "before"
    And I put "c" = "3" into "regatta-test" on node 1
    Then the request succeeds
    And within 10 seconds the applied index of "regatta-test" on node 3 is above "before"
    When I ask node 1 for its status
    Then the status is that of node 1, with a version
    And the status covers tables "other, regatta-test"

  @restart @extension @needs-faults
  Scenario: Status reports the bytes a table's Raft log and data take on disk (Regatta 0.5 leaves them 0)
    Given a leader cluster of 1 node with tables "regatta-test"
    When I write 50 keys "k" into "regatta-test"
    And node 1 is stopped
    And node 1 is restarted
    Then within 30 seconds the status of "regatta-test" on node 1 reports the bytes of its log and data on disk

  @needs-flags
  Scenario: Status with config shows the node's settings, every token masked
    Given a leader cluster of 3 nodes with tables "regatta-test" and flags "--tables.token=tables-s3cret --maintenance.token=maintenance-s3cret --memberlist.cluster-name=eu-west"
    When I ask node 2 for its status with config
    Then the request succeeds
    And the status is that of node 2, with a version
    And the status config shows "tables.token" as "**********"
    And the status config shows "maintenance.token" as "**********"
    And the status config shows "raft.node-id" as "2"
    And the status config shows "memberlist.cluster-name" as "eu-west"
    And no value in the status config contains "s3cret"
    When I ask node 3 for its status
    Then the request succeeds
    And the status carries no config
    And no node's log contains "s3cret"

  Scenario: Without tokens the status config shows none
    Given a leader cluster of 1 node with tables "regatta-test"
    When I ask node 1 for its status with config
    Then the request succeeds
    And the status config shows "raft.node-id" as "1"
    And the status config shows "tables.token" unset
    And the status config shows "maintenance.token" unset

  @replication @needs-follower-cluster @needs-flags
  Scenario: A follower cluster's nodes answer MemberList and Status for their own cluster
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "a=1"
    And a follower cluster of 3 nodes with flags "--maintenance.token=follower-s3cret --memberlist.cluster-name=replica" following it
    Then within 10 seconds every follower node lists 3 members sorted by id, with distinct ids, names and peer URLs and a client URL each
    When I ask follower node 2 for the member list
    Then the request succeeds
    And the member list is of cluster "replica"
    When I ask follower node 3 for its status with config
    Then the request succeeds
    And the status is that of node 3, with a version
    And the status covers tables "regatta-test"
    And the status reports no errors
    And the status config shows "maintenance.token" as "**********"
    And the status config shows "raft.node-id" as "3"
    And the status config shows "memberlist.cluster-name" as "replica"
    And no value in the status config contains "s3cret"
    And within 10 seconds every follower node's status names the leader and term of "regatta-test"
    When I ask node 1 for the member list
    Then the member list is of cluster "default"
