//! Which table names a client may use, checked once here for every path
//! that creates, deletes or restores a table (the Tables API, Restore,
//! `--tables.names`/`--tables.delete`, follower reconcile), before anything
//! is written.
//!
//! Names are Regatta 0.5's: UTF-8 text of 1 to 1024 bytes. Any such name is
//! a user table: the server's own state lives in a table space of its own
//! (`storage::Space::Server`), so no name, `"\0catalogue"` included, reaches
//! it. (Versions before that kept the catalogue under that very name and
//! refused names starting with a zero byte.)

use super::error::{Error, Result};

/// Longest table name, in bytes (Regatta 0.5 took any length; *fixed*).
pub const MAX_NAME_BYTES: usize = 1024;

/// Regatta 0.5's messages, which the API answers with `InvalidArgument`.
pub const NAME_MUST_BE_SET: &str = "name must be set";
pub const NAME_TOO_LONG: &str = "name length exceeded max allowed value";
/// A `bytes` field (Restore's table) holding no text: the Tables API could
/// never list it. The spec is silent; worded like the two above.
pub const NAME_NOT_UTF8: &str = "name must be valid UTF-8";

/// Refuses a name no client may give a table.
pub fn check(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidTableName(NAME_MUST_BE_SET));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidTableName(NAME_TOO_LONG));
    }
    if std::str::from_utf8(name).is_err() {
        return Err(Error::InvalidTableName(NAME_NOT_UTF8));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(name: &[u8]) -> Option<&'static str> {
        match check(name) {
            Ok(()) => None,
            Err(Error::InvalidTableName(message)) => Some(message),
            Err(other) => panic!("{name:?}: {other}"),
        }
    }

    #[test]
    fn empty_overlong_and_non_text_names_are_refused_with_their_messages() {
        assert_eq!(refusal(b""), Some(NAME_MUST_BE_SET));
        assert_eq!(refusal(&[b'a'; 1025]), Some(NAME_TOO_LONG));
        assert_eq!(refusal(&[0xff, 0xfe]), Some(NAME_NOT_UTF8));
        assert_eq!(refusal(b"ok\xc3"), Some(NAME_NOT_UTF8));
    }

    #[test]
    fn every_text_name_up_to_1024_bytes_is_a_user_table() {
        for name in [
            &b"regatta"[..],
            b"\0catalogue",
            b"catalogue",
            b"\0",
            b"a\0b",
            b"..",
            b"/",
            b"a/../b",
            "t\u{e9}ble".as_bytes(),
            &[b'a'; 1024],
        ] {
            assert_eq!(refusal(name), None, "{name:?}");
        }
    }
}
