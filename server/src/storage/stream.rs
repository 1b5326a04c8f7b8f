//! The command-stream format of snapshots and backups
//! (`docs/contract-notes.md`, "Command streams"): a Snappy framing-format
//! stream of records `[u64 LE length N][N bytes of a serialized
//! mvcc.v1.Command]`. Regatta (Go) writes and reads the same bytes.

use std::io::{self, Read, Write};

use prost::Message;
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue};

use super::error::{Error, Result};

/// Largest record a reader accepts: a 1 KiB key plus a 2 MiB value fit many
/// times over; anything larger is a corrupt length, not data.
const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Writes records into a Snappy frame stream. Memory use is constant.
pub struct CommandStreamWriter<W: Write> {
    encoder: snap::write::FrameEncoder<W>,
    scratch: Vec<u8>,
}

impl<W: Write> CommandStreamWriter<W> {
    pub fn new(out: W) -> Self {
        CommandStreamWriter {
            encoder: snap::write::FrameEncoder::new(out),
            scratch: Vec::new(),
        }
    }

    /// Appends one record.
    pub fn write(&mut self, command: &Command) -> Result<()> {
        self.scratch.clear();
        command
            .encode(&mut self.scratch)
            .map_err(|err| Error::Io(io::Error::other(err)))?;
        self.encoder
            .write_all(&(self.scratch.len() as u64).to_le_bytes())?;
        self.encoder.write_all(&self.scratch)?;
        Ok(())
    }

    /// Flushes the last frame and hands back the sink.
    pub fn finish(self) -> Result<W> {
        self.encoder
            .into_inner()
            .map_err(|err| Error::Io(io::Error::other(err.to_string())))
    }
}

/// A data record of a snapshot: one key.
pub fn data_record(table: &[u8], kv: KeyValue) -> Command {
    Command {
        table: table.to_vec(),
        r#type: CommandType::Put as i32,
        kv: Some(kv),
        ..Command::default()
    }
}

/// The trailing record of a snapshot: the leader index the copy reflects.
/// Our snapshots also carry the table's revision in `kv.mod_revision` (with
/// an empty key, so other readers ignore it).
pub fn trailer_record(table: &[u8], leader_index: Option<u64>, revision: Option<u64>) -> Command {
    Command {
        table: table.to_vec(),
        r#type: CommandType::Dummy as i32,
        leader_index,
        kv: revision.map(|revision| KeyValue {
            mod_revision: i64::try_from(revision).unwrap_or(i64::MAX),
            ..KeyValue::default()
        }),
        ..Command::default()
    }
}

/// One item read from a command stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A key with its value (and revisions, zero when the writer had none).
    Data(KeyValue),
    /// The trailing DUMMY: the leader index the copy reflects, and the
    /// revision when the writer recorded one.
    Trailer {
        leader_index: Option<u64>,
        revision: Option<u64>,
    },
}

/// Reads records from a Snappy frame stream; every framing error, truncation
/// or undecodable record is a [`Error::MalformedStream`].
pub struct CommandStreamReader<R: Read> {
    decoder: snap::read::FrameDecoder<R>,
    /// A DUMMY seen last; it counts only if nothing follows it.
    pending_trailer: Option<Command>,
    /// The sub-commands of a Regatta 0.5 SEQUENCE record not yet read, in order.
    unpacked: std::collections::VecDeque<Command>,
    finished: bool,
}

impl<R: Read> CommandStreamReader<R> {
    pub fn new(input: R) -> Self {
        CommandStreamReader {
            decoder: snap::read::FrameDecoder::new(input),
            pending_trailer: None,
            unpacked: std::collections::VecDeque::new(),
            finished: false,
        }
    }

    /// The next raw record, or `None` at a clean end of stream.
    fn next_command(&mut self) -> Result<Option<Command>> {
        let mut len = [0u8; 8];
        match read_full(&mut self.decoder, &mut len)? {
            0 => return Ok(None),
            8 => {}
            n => {
                return Err(malformed(format!(
                    "stream ends inside a record length ({n} of 8 bytes)"
                )))
            }
        }
        let len = u64::from_le_bytes(len);
        if len > MAX_RECORD_BYTES {
            return Err(malformed(format!(
                "record length {len} exceeds {MAX_RECORD_BYTES} bytes"
            )));
        }
        let mut body = vec![0u8; len as usize];
        let got = read_full(&mut self.decoder, &mut body)?;
        if got != body.len() {
            return Err(malformed(format!(
                "stream ends inside a record ({got} of {len} bytes)"
            )));
        }
        Command::decode(body.as_slice())
            .map(Some)
            .map_err(|err| malformed(format!("record is not a Command: {err}")))
    }

    fn step(&mut self) -> Result<Option<Record>> {
        loop {
            let next = match self.unpacked.pop_front() {
                Some(command) => Some(command),
                None => self.next_command()?,
            };
            let Some(command) = next else {
                self.finished = true;
                return Ok(self.pending_trailer.take().map(|dummy| Record::Trailer {
                    leader_index: dummy.leader_index,
                    revision: dummy
                        .kv
                        .and_then(|kv| u64::try_from(kv.mod_revision).ok())
                        .filter(|revision| *revision > 0),
                }));
            };
            if command.r#type == CommandType::Sequence as i32 {
                // Read as the records it holds, in their order.
                for sub in command.sequence.into_iter().rev() {
                    self.unpacked.push_front(sub);
                }
                continue;
            }
            self.pending_trailer = None;
            if command.r#type == CommandType::Dummy as i32 {
                self.pending_trailer = Some(command);
                continue;
            }
            match command.kv {
                Some(kv) if !kv.key.is_empty() => return Ok(Some(Record::Data(kv))),
                // Records without a key carry nothing to restore.
                _ => continue,
            }
        }
    }
}

impl<R: Read> Iterator for CommandStreamReader<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.step() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => None,
            Err(err) => {
                self.finished = true;
                Some(Err(err))
            }
        }
    }
}

fn malformed(reason: String) -> Error {
    Error::MalformedStream(reason)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
/// Framing errors (bad checksum, bad chunk) become malformed-stream errors.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(malformed(format!("snappy framing: {err}"))),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            ..KeyValue::default()
        }
    }

    fn write_all(records: &[Command]) -> Vec<u8> {
        let mut writer = CommandStreamWriter::new(Vec::new());
        for record in records {
            writer.write(record).unwrap();
        }
        writer.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Record>> {
        CommandStreamReader::new(bytes).collect()
    }

    #[test]
    fn empty_input_is_an_empty_stream() {
        assert_eq!(read_all(&[]).unwrap(), vec![]);
    }

    #[test]
    fn records_round_trip_with_trailer() {
        let bytes = write_all(&[
            data_record(b"t", kv(b"a", b"1")),
            data_record(b"t", kv(b"b", b"")),
            trailer_record(b"t", Some(42), Some(7)),
        ]);
        assert_eq!(
            read_all(&bytes).unwrap(),
            vec![
                Record::Data(kv(b"a", b"1")),
                Record::Data(kv(b"b", b"")),
                Record::Trailer {
                    leader_index: Some(42),
                    revision: Some(7)
                },
            ]
        );
    }

    #[test]
    fn dummy_in_the_middle_is_not_a_trailer() {
        let bytes = write_all(&[
            trailer_record(b"t", Some(5), None),
            data_record(b"t", kv(b"a", b"1")),
        ]);
        assert_eq!(
            read_all(&bytes).unwrap(),
            vec![Record::Data(kv(b"a", b"1"))]
        );
    }

    #[test]
    fn a_regatta_0_5_sequence_record_reads_as_the_records_it_holds() {
        let sequence = |commands: Vec<Command>| Command {
            table: b"t".to_vec(),
            r#type: CommandType::Sequence as i32,
            sequence: commands,
            ..Command::default()
        };
        let bytes = write_all(&[
            sequence(vec![
                data_record(b"t", kv(b"a", b"1")),
                sequence(vec![data_record(b"t", kv(b"b", b"2"))]),
            ]),
            data_record(b"t", kv(b"c", b"3")),
            sequence(vec![
                data_record(b"t", kv(b"d", b"4")),
                trailer_record(b"t", Some(9), None),
            ]),
        ]);
        assert_eq!(
            read_all(&bytes).unwrap(),
            vec![
                Record::Data(kv(b"a", b"1")),
                Record::Data(kv(b"b", b"2")),
                Record::Data(kv(b"c", b"3")),
                Record::Data(kv(b"d", b"4")),
                Record::Trailer {
                    leader_index: Some(9),
                    revision: None
                },
            ]
        );
    }

    #[test]
    fn truncated_stream_is_malformed() {
        let bytes = write_all(&[data_record(b"t", kv(b"a", &[7; 5000]))]);
        // (A cut exactly at a frame boundary, e.g. after the 10-byte stream
        // identifier, is a shorter valid stream and cannot be detected.)
        for cut in [1, 11, bytes.len() / 2, bytes.len() - 1] {
            let result = read_all(&bytes[..cut]);
            assert!(
                matches!(result, Err(Error::MalformedStream(_))),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            read_all(b"not a snappy stream"),
            Err(Error::MalformedStream(_))
        ));
    }
}
