@regatta-0.5 @wire
Feature: Regatta 2022 and 0.5 encodings on one server
  Clients generated from Regatta 2022's protos and from Regatta 0.5's talk to
  the same server. 0.5 moved RequestOp.DeleteRange.prev_kv from field 3 to
  field 4 and added `count` fields (5); a request means the same in either
  encoding. The requests here are written field by field ("raw"), as each
  generation's generated code puts them on the wire.

  Background:
    Given a leader cluster of 1 node with tables "wire"
    And table "wire" holds "k=v, other=1"

  Scenario Outline: A Txn delete asks for the deleted pair in either generation's encoding
    When I send a raw Txn to "wire" on node 1 whose success branch deletes "k" with bool fields <fields> set, as <generation> encodes it
    Then the Txn takes the success branch with responses:
      | <response> |
    And no node holds "k" in "wire"
    And every node eventually holds "other" = "1" in "wire"

    Examples:
      | generation          | fields | response      |
      | Regatta 2022        | 3      | delete 1: k=v |
      | Regatta 0.5         | 4      | delete 1: k=v |
      | Regatta 0.5         | 4, 5   | delete 1: k=v |
      | Regatta 0.5         | 5      | delete 1      |
      | either generation   | none   | delete 1      |

  Scenario: A Txn delete of a missing key answers no pair in the 0.5 encoding
    When I send a raw Txn to "wire" on node 1 whose success branch deletes "missing" with bool fields 4 set, as Regatta 0.5 encodes it
    Then the Txn takes the success branch with responses:
      | delete 0 |

  Scenario Outline: DeleteRange's count field (0.5) is accepted; prev_kv keeps its number
    When I send a raw DeleteRange to "wire" on node 1 deleting "k" with bool fields <fields> set, as <generation> encodes it
    Then 1 key was deleted
    And the deleted pairs are "<pairs>"
    And no node holds "k" in "wire"

    Examples:
      | generation   | fields | pairs |
      | Regatta 2022 | 4      | k=v   |
      | Regatta 0.5  | 4, 5   | k=v   |
      | Regatta 0.5  | 5      |       |
