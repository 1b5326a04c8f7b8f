//! Reads and writes the command-stream format of snapshots and backups
//! (`docs/contract-notes.md`, "Command streams"): Snappy framing around
//! records `[u64 LE length][mvcc.v1.Command]`.
//! The suite's own reader, so it checks servers without trusting their code.

use std::io::Read;

use anyhow::{bail, Context, Result};
use prost::Message;
use regatta_proto::mvcc::v1::Command;

/// Decodes every record of a whole stream.
pub fn decode(bytes: &[u8]) -> Result<Vec<Command>> {
    let mut reader = snap::read::FrameDecoder::new(bytes);
    let mut commands = Vec::new();
    loop {
        let mut length = [0u8; 8];
        match read_full(&mut reader, &mut length)? {
            0 => return Ok(commands),
            8 => {}
            n => bail!("stream ends inside a record length ({n} of 8 bytes)"),
        }
        let length = u64::from_le_bytes(length);
        if length > 64 * 1024 * 1024 {
            bail!("record length {length} is not plausible");
        }
        let mut record = vec![0u8; length as usize];
        if read_full(&mut reader, &mut record)? != record.len() {
            bail!("stream ends inside a record");
        }
        commands.push(Command::decode(record.as_slice()).context("undecodable record")?);
    }
}

/// Writes `commands` as one stream (the writer side, for restores the
/// scenarios build record by record).
pub fn encode(commands: &[Command]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut writer = snap::write::FrameEncoder::new(Vec::new());
    for command in commands {
        let record = command.encode_to_vec();
        writer.write_all(&(record.len() as u64).to_le_bytes())?;
        writer.write_all(&record)?;
    }
    writer
        .into_inner()
        .map_err(|err| anyhow::anyhow!("finishing the Snappy stream: {err}"))
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = reader.read(&mut buffer[filled..])?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}
