@cluster @faults @regatta-2022 @needs-faults
Feature: Durability and consistency under faults
  A write is acknowledged only once it is durable on a majority; it survives
  the kill of any node, or of every node at once. A leader cut off or paused
  must neither acknowledge writes nor serve stale linearizable reads.

  # Wording: "I read" (also "in the background I read") is a linearizable
  # Range: it must reflect every write acknowledged before it began, so a
  # cut-off or paused node may fail it but not answer from a stale copy.

  Scenario: The leader killed under writes loses nothing acknowledged
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When 4 clients keep writing keys "w" into "regatta-test" on every node
    And the writers get 50 more writes acknowledged
    And the leader of "regatta-test" is killed
    And the writers get 50 more writes acknowledged
    And the old leader is restarted
    And the writers get 20 more writes acknowledged
    And the writers stop
    Then every node eventually holds every acknowledged write to "regatta-test"

  Scenario: A follower killed and restarted catches up from the log
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I write 20 keys "before-" into "regatta-test"
    And node 2 is killed
    And I write 50 keys "during-" into "regatta-test"
    And node 2 is restarted
    Then node 2 eventually holds every acknowledged write to "regatta-test"

  Scenario: Every node killed at once and restarted keeps every acknowledged write
    Given a leader cluster of 3 nodes with tables "regatta-test,second"
    When I write 100 keys "k" into "regatta-test"
    And I write 10 keys "s" into "second"
    And every node is killed
    And every node is restarted
    Then every node eventually holds every acknowledged write to "regatta-test"
    And every node eventually holds every acknowledged write to "second"
    When I put "after" = "restart" into "regatta-test" on any node
    Then the request succeeds

  @needs-flags
  Scenario: A node that missed a compacted log catches up by snapshot
    Given a leader cluster of 3 nodes with tables "regatta-test" and flags "--raft.snapshot-entries=20 --raft.compaction-overhead=5"
    When node 3 is stopped
    And I write 200 keys "k" into "regatta-test"
    And node 3 is restarted
    Then node 3 eventually holds every acknowledged write to "regatta-test"
    When I put "after" = "snapshot" into "regatta-test" on node 3
    Then the request succeeds
    And node 3 eventually holds "after" = "snapshot" in "regatta-test"

  Scenario: A leader paused past the election timeout neither acknowledges stale writes nor serves stale reads
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "k=v1"
    When the leader of "regatta-test" is paused
    And within 30 seconds a put of "k" = "v2" into "regatta-test" on another node succeeds
    And in the background I read "k" from "regatta-test" on the paused node
    And in the background I put "k" = "v3" into "regatta-test" on the paused node
    And the paused node is resumed
    Then the background read returns one of "v2, v3" or fails
    And every node eventually agrees on "k" in "regatta-test"
    And the agreed value is "v3" if the background put succeeded
    And the agreed value is one of "v2, v3"

  Scenario: A node cut off from the others refuses writes while the majority goes on
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When the leader of "regatta-test" is cut off from the others
    Then a put of "lost" = "x" into "regatta-test" on the cut-off node is not acknowledged
    # The default deadline of a KV call is 5 s.
    And a put of "lost-too" = "x" into "regatta-test" on the cut-off node without a deadline is not acknowledged within 8 seconds
    When within 30 seconds a put of "kept" = "y" into "regatta-test" on another node succeeds
    And the network is healed
    Then every node eventually holds "kept" = "y" in "regatta-test"
    And no node holds "lost" in "regatta-test"
    And no node holds "lost-too" in "regatta-test"

  Scenario: In a 3|2 split the minority holding the leader acknowledges nothing while the majority goes on
    Given a leader cluster of 5 nodes with tables "regatta-test"
    And table "regatta-test" holds "k=old"
    When the leader of "regatta-test" and one other node are cut off from the others
    Then a put of "lost" = "x" into "regatta-test" on the cut-off node is not acknowledged
    When within 30 seconds a put of "k" = "new" into "regatta-test" on another node succeeds
    And I read "k" from "regatta-test" on the second cut-off node
    Then the response is "new" or an error
    When the network is healed
    Then every node eventually holds "k" = "new" in "regatta-test"
    And no node holds "lost" in "regatta-test"

  Scenario: A follower cut off from the others serves no stale linearizable read
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "k=old"
    When node 1 is cut off from the others
    And within 30 seconds a put of "k" = "new" into "regatta-test" on another node succeeds
    And I read "k" from "regatta-test" on the cut-off node
    Then the response is "new" or an error
    When the network is healed
    Then every node eventually holds "k" = "new" in "regatta-test"

  @regression
  Scenario: After every node is killed at once, no node's first linearizable read is older than the last acknowledged write
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I write 300 keys "k" into "regatta-test"
    And I put "k000299" = "last" into "regatta-test" on the leader
    Then the request succeeds
    When every node is killed
    And every node is restarted
    Then the first linearizable read of "k000299" from "regatta-test" to succeed on every node returns "last"
