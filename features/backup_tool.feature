@maintenance @backup-tool @needs-tools
Feature: The backup tool: a directory of table files and a manifest
  The server's backup tool (Regatta's `regatta backup` and `regatta
  restore`) copies every table of a leader cluster into a directory: one
  file per table, in the command-stream format of a Backup call, and a
  manifest.json naming each file with its md5. A restore checks every file
  against the manifest before it sends anything, so a damaged or incomplete
  directory changes nothing. Directories move both ways between Regatta
  (Go) and the server under test. The tool is `[tools]` of the suite's
  server template (conformance/README.md); the operators' guide is
  docs/backups.md.

  @regatta-2022
  Scenario: A backup directory restores every table into a fresh cluster
    Given a leader cluster of 3 nodes with tables "regatta-test,empty"
    When I write 50 keys "k" into "regatta-test"
    And I remember the pairs of "regatta-test" on node 1 as "before"
    And I back up every table of node 1 with the backup tool into "nightly"
    Then the tool succeeds
    And the backup directory "nightly" has a manifest of the tables "empty, regatta-test", each file with its md5
    And the backup "nightly/regatta-test" of "regatta-test" holds the pairs "before", a PUT each in key order with no trailing DUMMY
    And the backup "nightly/empty" of "empty" holds no pair, a PUT each in key order with no trailing DUMMY
    Given a fresh leader cluster of 3 nodes with tables "other" replacing it
    When I restore "nightly" into node 1 with the backup tool
    Then the tool succeeds
    And every node eventually holds exactly the pairs "before" in "regatta-test"
    When I send Range {table: "empty", key: "\x00", range_end: "\x00", count_only: true, linearizable: true} to node 2
    Then count is 0

  @regatta-2022
  Scenario: Regatta (Go)'s backup directory restores; a corrupted or incomplete one changes nothing
    Given a leader cluster of 1 node with tables "other"
    When I restore the Go backup directory "corrupted" into node 1 with the backup tool
    Then the tool fails, naming "regatta-test"
    When I send Range {table: "regatta-test", key: "a"} to node 1
    Then the error is NotFound "table not found"
    When I restore the Go backup directory "missing-file" into node 1 with the backup tool
    Then the tool fails, naming "regatta-test.bak"
    When I send Range {table: "regatta-test", key: "a"} to node 1
    Then the error is NotFound "table not found"
    When I restore the Go backup directory "complete" into node 1 with the backup tool
    Then the tool succeeds
    When I send Range {table: "regatta-test", key: "\x00", range_end: "\x00", count_only: true, linearizable: true} to node 1
    Then count is 1000
    When I read "1631262254_0" from "regatta-test" on node 1
    Then the response has pairs "1631262254_0=value_0"
    When I send Range {table: "applicable-device-secure-policy", key: "\x00", range_end: "\x00", count_only: true, linearizable: true} to node 1
    Then count is 0
    When I back up every table of node 1 with the backup tool into "ours"
    Then the tool succeeds
    And the backup directory "ours" has a manifest of the tables "applicable-device-secure-policy, other, regatta-test", each file with its md5
    And the backup "ours/regatta-test" of "regatta-test" holds the same records as the Go backup file "complete/regatta-test.bak"
