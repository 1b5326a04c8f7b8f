@maintenance
Feature: Maintenance: backup, restore and reset
  The maintenance API of a leader cluster streams point-in-time backups of
  a table and replaces a table's content from one; a follower cluster's
  resets a table so it is copied again. Backups of Regatta (Go) restore as
  they are. Every call carries the bearer token when one is set. Operators'
  guide: docs/backups.md; the stream format: docs/contract-notes.md.

  @regatta-2022 @fixed
  Scenario: Backup, wipe and restore give the table back key for key
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When I write 50 keys "k" into "regatta-test"
    And I remember the pairs of "regatta-test" on node 1 as "before"
    And I back up "regatta-test" from node 2 as "full"
    Then the backup "full" of "regatta-test" holds the pairs "before", a PUT each in key order with no trailing DUMMY
    When I delete from "\x00" to "\x00" in "regatta-test" on node 1
    And I put "stray" = "1" into "regatta-test" on node 3
    And I restore "full" into "regatta-test" on node 3
    Then the maintenance call succeeds
    And every node eventually holds exactly the pairs "before" in "regatta-test"
    When I put "after" = "restore" into "regatta-test" on node 1
    Then the request succeeds
    And every node eventually holds "after" = "restore" in "regatta-test"

  @regatta-2022
  Scenario: An empty table backs up as no bytes, and a restore into a new table creates it
    Given a leader cluster of 1 node with tables "regatta-test,empty"
    And table "regatta-test" holds "a=1, b=2"
    When I back up "empty" from node 1 as "nothing"
    Then the backup "nothing" of "empty" holds no pair, a PUT each in key order with no trailing DUMMY
    When I back up "regatta-test" from node 1 as "two"
    And I restore "two" into "copy" on node 1
    Then the maintenance call succeeds
    And a linearizable range from "\x00" to "\x00" over "copy" on node 1 returns "a=1, b=2"

  @regatta-2022
  Scenario: A backup taken under concurrent writes is one point in time
    Given a leader cluster of 3 nodes with tables "regatta-test"
    When 4 clients keep writing keys "w" into "regatta-test" on every node
    And the writers get 100 more writes acknowledged
    And I back up "regatta-test" from node 1 as "moving"
    And the writers get 50 more writes acknowledged
    And the writers stop
    Given a fresh leader cluster of 3 nodes with tables "other" replacing it
    When I restore "moving" into "regatta-test" on node 2
    Then the maintenance call succeeds
    When I remember the pairs of "regatta-test" on node 1 as "restored"
    Then the pairs "restored" are, for each writer "w", every key it wrote up to some point
    And every node eventually holds exactly the pairs "restored" in "regatta-test"

  @regatta-2022
  Scenario: A restore skips records without a key and takes a trailing DUMMY as no pair
    Given a leader cluster of 1 node with tables "regatta-test"
    When I restore into "regatta-test" on node 1 a command stream of "a=1, b=2", a record without a key and a trailing DUMMY
    Then the maintenance call succeeds
    And a linearizable range from "\x00" to "\x00" over "regatta-test" on node 1 returns "a=1, b=2"

  @regatta-2022
  Scenario: Backups written by Regatta (Go) restore as they are
    Given a leader cluster of 3 nodes with tables "other"
    When I restore the Go backup file "complete/regatta-test.bak" into "regatta-test" on node 1
    Then the maintenance call succeeds
    When I send Range {table: "regatta-test", key: "\x00", range_end: "\x00", count_only: true, linearizable: true} to node 2
    Then count is 1000
    When I read "1631262254_0" from "regatta-test" on node 3
    Then the response has pairs "1631262254_0=value_0"
    When I restore the Go backup file "complete/applicable-device-secure-policy.bak" into "applicable-device-secure-policy" on node 2
    Then the maintenance call succeeds
    When I send Range {table: "applicable-device-secure-policy", key: "\x00", range_end: "\x00", count_only: true, linearizable: true} to node 1
    Then count is 0

  @regatta-2022
  Scenario: A malformed or truncated restore stream changes nothing and answers InvalidArgument
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "keep=1"
    When I restore the Go backup file "complete/regatta-test.bak" into "regatta-test" on node 1 cut after 5000 bytes
    Then the maintenance call fails with InvalidArgument
    And a linearizable range from "\x00" to "\x00" over "regatta-test" on node 2 returns "keep=1"
    When I restore the Go backup file "complete/regatta-test.bak" into "fresh" on node 1 cut after 5000 bytes
    Then the maintenance call fails with InvalidArgument
    When I send Range {table: "fresh", key: "a"} to node 1
    Then the error is NotFound "table not found"
    When I send a Restore to node 2 that starts with a chunk
    Then the maintenance call fails with InvalidArgument "first message should contain info"
    When I send a Restore to node 2 that sends info twice
    Then the maintenance call fails with InvalidArgument "chunk expected"
    And a linearizable range from "\x00" to "\x00" over "regatta-test" on node 3 returns "keep=1"

  @regatta-2022
  Scenario: Calls a leader does not serve answer Unimplemented, unknown tables NotFound
    Given a leader cluster of 1 node with tables "regatta-test"
    When I reset "regatta-test" on node 1
    Then the maintenance call fails with Unimplemented "method Reset not implemented"
    When I call Backup of "nope" on node 1 without authorization
    Then the maintenance call fails with NotFound "table not found"

  @regatta-2022 @needs-flags
  Scenario: With a token every maintenance call needs it, with Regatta's messages
    Given a leader cluster of 1 node with tables "regatta-test" and flags "--maintenance.token=s3cret"
    When I call Backup of "regatta-test" on node 1 without authorization
    Then the maintenance call fails with Unauthenticated "Request unauthenticated with bearer"
    When I call Backup of "regatta-test" on node 1 with authorization "Basic s3cret"
    Then the maintenance call fails with Unauthenticated "Request unauthenticated with bearer"
    When I call Backup of "regatta-test" on node 1 with authorization "Bearer"
    Then the maintenance call fails with Unauthenticated "Bad authorization string"
    When I call Backup of "regatta-test" on node 1 with authorization "Bearer wrong"
    Then the maintenance call fails with Unauthenticated "Invalid token"
    When I call Backup of "regatta-test" on node 1 with authorization "bearer s3cret"
    Then the maintenance call succeeds
    When I call Metadata.Get on the maintenance API of node 1 without authorization
    Then the maintenance call fails with Unauthenticated "Request unauthenticated with bearer"
    When I call Metadata.Get on the maintenance API of node 1 with authorization "Bearer s3cret"
    Then the maintenance call succeeds

  @regatta-2022 @needs-flags
  Scenario: Restore and Reset need the token too, and no token reaches a log
    Given a leader cluster of 1 node with tables "regatta-test" and flags "--maintenance.token=maint-s3cret --tables.token=tables-s3cret"
    When I put "a" = "1" into "regatta-test" on node 1
    And I back up "regatta-test" from node 1 as "saved" with authorization "Bearer maint-s3cret"
    And I put "b" = "2" into "regatta-test" on node 1
    And I restore "saved" into "regatta-test" on node 1 without authorization
    Then the maintenance call fails with Unauthenticated "Request unauthenticated with bearer"
    When I restore "saved" into "regatta-test" on node 1 with authorization "Bearer tables-s3cret"
    Then the maintenance call fails with Unauthenticated "Invalid token"
    And every node eventually holds "b" = "2" in "regatta-test"
    When I restore "saved" into "regatta-test" on node 1 with authorization "Bearer maint-s3cret"
    Then the maintenance call succeeds
    And no node holds "b" in "regatta-test"
    When I reset "regatta-test" on node 1 without authorization
    Then the maintenance call fails with Unauthenticated "Request unauthenticated with bearer"
    When I reset "regatta-test" on node 1 with authorization "Bearer wrong"
    Then the maintenance call fails with Unauthenticated "Invalid token"
    When I reset "regatta-test" on node 1 with authorization "Bearer maint-s3cret"
    Then the maintenance call fails with Unimplemented "method Reset not implemented"
    And no node's log contains "s3cret"

  @regatta-0.5 @needs-flags
  Scenario: With a token the API port serves the maintenance API too (Regatta 0.4+)
    Given a leader cluster of 1 node with tables "regatta-test" and flags "--maintenance.token=s3cret"
    When I call Backup of "regatta-test" on the API port of node 1 without authorization
    Then the maintenance call fails with Unauthenticated "Request unauthenticated with bearer"
    When I call Backup of "regatta-test" on the API port of node 1 with authorization "Bearer wrong"
    Then the maintenance call fails with Unauthenticated "Invalid token"
    When I call Backup of "regatta-test" on the API port of node 1 with authorization "Bearer s3cret"
    Then the maintenance call succeeds
    When I call Metadata.Get on the API port of node 1 with authorization "Bearer s3cret"
    Then the maintenance call succeeds

  @regatta-0.5
  Scenario: Without a token the API port offers no maintenance API
    Given a leader cluster of 1 node with tables "regatta-test"
    When I call Backup of "regatta-test" on the API port of node 1 without authorization
    Then the maintenance call fails with Unimplemented

  @replication @regatta-2022 @needs-follower-cluster
  Scenario: A restored table reaches the follower clusters
    Given a leader cluster of 3 nodes with tables "regatta-test"
    And table "regatta-test" holds "old=1, both=old"
    And a follower cluster of 3 nodes following it
    Then every follower node eventually holds "old" = "1" in "regatta-test"
    When I back up "regatta-test" from node 1 as "first"
    And I put "both" = "new" into "regatta-test" on node 1
    And I put "later" = "1" into "regatta-test" on node 2
    And I restore "first" into "regatta-test" on node 2
    Then the maintenance call succeeds
    When I remember the pairs of "regatta-test" on node 1 as "restored"
    Then every follower node eventually holds exactly the pairs "restored" in "regatta-test"
    And no follower node holds "later" in "regatta-test"

  @replication @regatta-2022 @needs-follower-cluster @needs-flags
  Scenario: Reset makes a follower copy a table again; its calls answer Regatta's errors
    Given a leader cluster of 3 nodes with tables "regatta-test" and flags "--raft.snapshot-entries=20 --raft.compaction-overhead=5"
    When I write 30 keys "k" into "regatta-test"
    And node 1 has compacted its log of "regatta-test" past leader index 1
    Given a follower cluster of 3 nodes following it
    Then every follower node eventually holds every acknowledged write to "regatta-test"
    And the follower cluster has recovered "regatta-test" by snapshot at least 1 time
    # The leader's log starts past the reset's leader index 0: copying the
    # table again takes a snapshot, which the follower counts.
    When I reset "regatta-test" on follower node 1
    Then the maintenance call succeeds
    And the follower cluster has recovered "regatta-test" by snapshot at least 2 times
    When I put "c" = "3" into "regatta-test" on node 1
    And I remember the pairs of "regatta-test" on node 1 as "leader"
    Then every follower node eventually holds exactly the pairs "leader" in "regatta-test"
    When I reset every table on follower node 2
    Then the maintenance call succeeds
    And the follower cluster has recovered "regatta-test" by snapshot at least 3 times
    And every follower node eventually holds exactly the pairs "leader" in "regatta-test"
    When I reset "" on follower node 1
    Then the maintenance call fails with InvalidArgument "table must be set"
    When I reset "nope" on follower node 1
    Then the maintenance call fails with NotFound "table not found"
    When I call Backup of "regatta-test" on follower node 1 without authorization
    Then the maintenance call fails with Unimplemented "method Backup not implemented"
    When I call Metadata.Get on the maintenance API of follower node 2 without authorization
    Then the maintenance call fails with Unimplemented "method Get not implemented"
