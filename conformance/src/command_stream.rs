//! Reads the command-stream format of snapshots and backups (behaviour.md
//! §6): Snappy framing around records `[u64 LE length][mvcc.v1.Command]`.
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
