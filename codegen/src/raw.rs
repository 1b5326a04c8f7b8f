//! Messages as bytes: a gRPC codec that sends and receives raw encodings,
//! and a writer of protobuf fields. For tests that must put on the wire
//! exactly what another generation's generated code sends (Regatta 2022 and
//! 0.5 number one field differently), not what our own structs encode.

use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Sends and receives message bodies as they are, undecoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use prost::bytes::Buf;
        let mut body = vec![0; src.remaining()];
        src.copy_to_slice(&mut body);
        Ok(Some(body))
    }
}

/// A message body written field by field, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<u8>);

impl Fields {
    pub fn new() -> Self {
        Fields::default()
    }

    /// A length-delimited field: bytes, a string or an embedded message.
    pub fn bytes(mut self, number: u32, value: &[u8]) -> Self {
        self.varint(u64::from(number) << 3 | 2);
        self.varint(value.len() as u64);
        self.0.extend_from_slice(value);
        self
    }

    /// An embedded message.
    pub fn message(self, number: u32, message: Fields) -> Self {
        self.bytes(number, &message.0)
    }

    /// A varint field (bool, enum, integer).
    pub fn uint(mut self, number: u32, value: u64) -> Self {
        self.varint(u64::from(number) << 3);
        self.varint(value);
        self
    }

    /// A bool field set to true.
    pub fn flag(self, number: u32) -> Self {
        self.uint(number, 1)
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::Fields;
    use crate::mvcc::v1::request_op::DeleteRange;
    use prost::Message;

    #[test]
    fn fields_encode_as_prost_does() {
        let ours = DeleteRange {
            key: b"k".to_vec(),
            range_end: vec![0; 200],
            prev_kv: true,
            ..DeleteRange::default()
        };
        let raw = Fields::new()
            .bytes(1, b"k")
            .bytes(2, &[0; 200])
            .flag(3)
            .into_bytes();
        assert_eq!(raw, ours.encode_to_vec());
    }
}
