//! Which table names a client may use.
//!
//! The server keeps its own state in tables whose names start with a zero
//! byte (the catalogue: `catalogue::CATALOGUE_TABLE`). A user table of such
//! a name would start a second Raft group over that state: a `Restore` into
//! `"\0catalogue"` once left a node that could never start again. So every
//! path that would create, delete or restore a table (Restore,
//! `--tables.names`, follower reconcile) asks here first, before anything is
//! written. Reads of such a name find no table, as for any unknown name.
//!
//! Moving internal state out of the user namespace altogether is the Tables
//! API's work; this guard holds until then and after.

use super::error::{Error, Result};

/// Why such a name is refused: the cluster error's text and the gRPC
/// message (`api/status.rs`) both.
pub const RESERVED_MESSAGE: &str = "table name is reserved for the server's own metadata";

/// The first byte of every name the server uses for itself.
const RESERVED_FIRST_BYTE: u8 = 0;

/// Whether `name` belongs to the server rather than to its users.
pub fn is_reserved(name: &[u8]) -> bool {
    name.first() == Some(&RESERVED_FIRST_BYTE)
}

/// Refuses a name the server uses for itself (`Error::ReservedTableName`).
pub fn check_user_table(name: &[u8]) -> Result<()> {
    if is_reserved(name) {
        return Err(Error::ReservedTableName);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::catalogue::CATALOGUE_TABLE;

    #[test]
    fn the_catalogue_and_every_name_starting_with_a_zero_byte_are_reserved() {
        for name in [CATALOGUE_TABLE, b"\0", b"\0user", b"\0catalogue\0"] {
            assert!(
                matches!(check_user_table(name), Err(Error::ReservedTableName)),
                "{name:?} must be refused"
            );
        }
    }

    #[test]
    fn other_names_are_left_to_the_caller() {
        for name in [
            &b"regatta"[..],
            b"a\0b",
            b"catalogue",
            b"\x01catalogue",
            b"",
        ] {
            assert!(check_user_table(name).is_ok(), "{name:?} must pass");
        }
    }
}
