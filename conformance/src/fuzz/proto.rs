//! Protobuf at the byte level: a writer for fields the generated structs
//! cannot produce (groups, wrong wire types, any field number), a scanner
//! of a message's top-level fields, and the few messages of services that
//! `regatta-proto` does not generate (gRPC health and reflection).

use std::ops::Range;

/// Protobuf wire types.
pub const VARINT: u8 = 0;
pub const I64: u8 = 1;
pub const LEN: u8 = 2;
pub const SGROUP: u8 = 3;
pub const EGROUP: u8 = 4;
pub const I32: u8 = 5;

/// Appends `value` as a base-128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a field key; `wire` may be any of 0..=7 (6 and 7 are invalid).
pub fn put_key(out: &mut Vec<u8>, number: u64, wire: u8) {
    put_varint(out, (number << 3) | u64::from(wire & 7));
}

/// A message written field by field, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Msg(pub Vec<u8>);

impl Msg {
    pub fn new() -> Self {
        Msg::default()
    }

    /// A length-delimited field: bytes, a string or an embedded message.
    pub fn bytes(mut self, number: u64, value: &[u8]) -> Self {
        put_key(&mut self.0, number, LEN);
        put_varint(&mut self.0, value.len() as u64);
        self.0.extend_from_slice(value);
        self
    }

    pub fn msg(self, number: u64, message: Msg) -> Self {
        self.bytes(number, &message.0)
    }

    /// A varint field (bool, enum, integer; negative ints as 10 bytes).
    pub fn uint(mut self, number: u64, value: u64) -> Self {
        put_key(&mut self.0, number, VARINT);
        put_varint(&mut self.0, value);
        self
    }

    pub fn double(mut self, number: u64, value: f64) -> Self {
        put_key(&mut self.0, number, I64);
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// One top-level field of an encoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Where the key starts and the whole field ends.
    pub span: Range<usize>,
    /// The bytes of the key varint.
    pub key: Range<usize>,
    pub number: u64,
    pub wire: u8,
    /// The length varint of a LEN field.
    pub length: Option<Range<usize>>,
    /// The value: a varint's bytes, a LEN field's content, fixed bytes.
    pub value: Range<usize>,
}

/// Reads a varint at `at`; its value and the position after it.
pub fn read_varint(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *bytes.get(at + i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((value, at + i + 1));
        }
    }
    None
}

/// The top-level fields of `bytes`, or `None` when it does not parse as a
/// flat sequence of fields (a group, a bad wire type, a cut field).
pub fn scan(bytes: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let (key, after_key) = read_varint(bytes, at)?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return None;
        }
        let (length, value) = match wire {
            VARINT => {
                let (_, end) = read_varint(bytes, after_key)?;
                (None, after_key..end)
            }
            I64 => (None, after_key..after_key.checked_add(8)?),
            I32 => (None, after_key..after_key.checked_add(4)?),
            LEN => {
                let (len, content) = read_varint(bytes, after_key)?;
                let end = content.checked_add(usize::try_from(len).ok()?)?;
                (Some(after_key..content), content..end)
            }
            _ => return None,
        };
        if value.end > bytes.len() {
            return None;
        }
        at = value.end;
        fields.push(Field {
            span: start..at,
            key: start..after_key,
            number,
            wire,
            length,
            value,
        });
    }
    Some(fields)
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; 1 is SERVING.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `grpc.reflection.v1.ServerReflectionRequest` (v1alpha has the same
/// fields and numbers).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReflectionRequest {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(oneof = "ReflectionQuery", tags = "3, 4, 5, 6, 7")]
    pub message_request: Option<ReflectionQuery>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ReflectionQuery {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionRequest {
    #[prost(string, tag = "1")]
    pub containing_type: String,
    #[prost(int32, tag = "2")]
    pub extension_number: i32,
}

/// `grpc.reflection.v1.ServerReflectionResponse`, enough to tell that an
/// answer decodes (its oneof holds messages we do not look into).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReflectionResponse {
    #[prost(string, tag = "1")]
    pub valid_host: String,
    #[prost(message, optional, tag = "2")]
    pub original_request: Option<ServerReflectionRequest>,
}

/// Whether `bytes` decodes as a `T`, and prost's reason when not.
pub fn decodes<T: prost::Message + Default>(bytes: &[u8]) -> Result<(), String> {
    T::decode(bytes).map(drop).map_err(|err| err.to_string())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Undoes gRPC's percent-encoding of `grpc-message`.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let value = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 16).ok());
            if let Some(value) = value {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use regatta_proto::regatta::v1::PutRequest;

    #[test]
    fn scan_finds_the_fields_prost_wrote() {
        let bytes = PutRequest {
            table: b"fuzz".to_vec(),
            key: b"k".to_vec(),
            value: vec![7; 300],
            prev_kv: true,
        }
        .encode_to_vec();
        let fields = scan(&bytes).unwrap();
        let numbers: Vec<u64> = fields.iter().map(|f| f.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4]);
        assert_eq!(&bytes[fields[0].value.clone()], b"fuzz");
        assert_eq!(fields[2].value.len(), 300);
        assert_eq!(fields[2].length.as_ref().unwrap().len(), 2);
        assert_eq!(fields[3].wire, VARINT);
        assert!(scan(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn msg_writes_what_prost_writes() {
        let ours = Msg::new()
            .bytes(1, b"fuzz")
            .bytes(2, b"k")
            .uint(4, 1)
            .into_bytes();
        let prost = PutRequest {
            table: b"fuzz".to_vec(),
            key: b"k".to_vec(),
            prev_kv: true,
            ..PutRequest::default()
        }
        .encode_to_vec();
        assert_eq!(ours, prost);
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(
            percent_decode("failed%20to%20decode%20Protobuf%20message"),
            "failed to decode Protobuf message"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
