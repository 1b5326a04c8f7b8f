//! From a seed and a message index to the exact bytes of one call: a valid
//! request (`requests`), mutated in its protobuf body, its gRPC framing or
//! its delivery over HTTP/2.
//!
//! Every message depends on `(seed, index)` alone, never on earlier
//! messages or answers, so any one of them can be replayed by itself
//! (`fuzz --seed S --only INDEX`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::proto::{self, put_key, put_varint, Field, EGROUP, I32, I64, LEN, SGROUP, VARINT};
use super::requests::{self, random_bytes, Kind, Method, Shape, DATA_TABLE};

/// gRPC's limit on a decoded message (tonic's default, and the server's
/// `MAX_MESSAGE_BYTES`).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How the request body reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// All bytes, then END_STREAM.
    End,
    /// All bytes (already cut short), then RST_STREAM(CANCEL): no answer.
    Reset,
}

/// One call, exactly as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub index: u64,
    pub method: &'static Method,
    /// The request body: every gRPC frame (5-byte header and message),
    /// possibly cut short or followed by trailing bytes.
    pub body: Vec<u8>,
    /// Sent in DATA frames of at most this many bytes.
    pub split: Option<usize>,
    pub ending: Ending,
    /// A `grpc-encoding` request header.
    pub encoding: Option<&'static str>,
    /// A `grpc-timeout` request header.
    pub timeout: Option<String>,
    /// What was done to the valid request, in order.
    pub mutations: Vec<String>,
}

/// One gRPC message frame before it is written out.
#[derive(Debug, Clone)]
struct Frame {
    flag: u8,
    /// The length prefix when it lies about the message.
    length: Option<u32>,
    message: Vec<u8>,
}

impl Frame {
    fn new(message: Vec<u8>) -> Self {
        Frame {
            flag: 0,
            length: None,
            message,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.flag);
        let length = self
            .length
            .unwrap_or_else(|| u32::try_from(self.message.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&self.message);
    }
}

/// The gRPC frames of `messages`, uncompressed and valid.
pub fn frames(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        Frame::new(message.clone()).write(&mut out);
    }
    out
}

/// splitmix64: spreads `(seed, index, attempt)` over the PRNG's seeds.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn rng_for(seed: u64, index: u64, attempt: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(mix(seed) ^ index) ^ attempt))
}

/// Whether any bytes the server could read as a table name spell
/// [`DATA_TABLE`]. A table name reaches the server as one contiguous run of
/// the body (gRPC frames are contiguous slices of it, protobuf `bytes` and
/// `string` values are contiguous, a repeated one replaces rather than
/// appends), so if the body does not contain the name, no Tables/Delete,
/// Restore or KV write of this call can touch that table, whatever the
/// mutations did. Compressed frames could hide it, which is why gzip is
/// only ever announced for bodies that cannot be gzip (see [`plan`]).
pub fn touches_data_table(body: &[u8]) -> bool {
    body.windows(DATA_TABLE.len())
        .any(|window| window == DATA_TABLE.as_bytes())
}

/// Whether some bytes of `body` start a gzip member (1f 8b) or a zstd
/// frame (28 b5 2f fd, or a skippable frame 5? 2a 4d 18).
pub fn could_decompress(body: &[u8]) -> bool {
    body.windows(2).any(|w| w == [0x1f, 0x8b])
        || body.windows(4).any(|w| {
            w == [0x28, 0xb5, 0x2f, 0xfd] || (w[0] & 0xf0 == 0x50 && w[1..] == [0x2a, 0x4d, 0x18])
        })
}

/// The call of message `index` of the run with `seed`.
///
/// The pre-written table must stay unreachable by construction: a mutated
/// Tables/Delete, Restore or KV write whose name happened to come out as
/// exactly `fuzz-data` would legitimately delete or overwrite it, and the
/// end-of-run check would then report a loss that is not a bug. So a plan
/// whose bytes contain that name is dropped and drawn again (a new attempt
/// of the same index: still reproducible).
pub fn plan(seed: u64, index: u64) -> Plan {
    for attempt in 0.. {
        let mut rng = rng_for(seed, index, attempt);
        let mut plan = generate(&mut rng, seed, index);
        if plan.encoding.is_some_and(|e| e != "identity") && could_decompress(&plan.body) {
            // Announcing a compression is safe only when nothing in the
            // body can be read as the start of a gzip or zstd stream: then
            // every compressed frame fails to decompress before any name
            // is read from it.
            plan.encoding = None;
            plan.mutations.push("encoding-dropped".into());
        }
        if !touches_data_table(&plan.body) {
            return plan;
        }
    }
    unreachable!("attempts are unbounded")
}

fn generate(rng: &mut StdRng, seed: u64, index: u64) -> Plan {
    let method = requests::pick(rng);
    let mut messages = requests::base(method.kind, rng);
    let mut mutations = Vec::new();
    let mut plan = Plan {
        seed,
        index,
        method,
        body: Vec::new(),
        split: None,
        ending: Ending::End,
        encoding: None,
        timeout: None,
        mutations: Vec::new(),
    };
    // One in ten goes out valid: the baseline (a valid request must never
    // be answered Internal).
    if rng.random_range(0..10) == 0 {
        plan.body = frames(&messages);
        plan.mutations.push("valid".into());
        return plan;
    }
    let count = rng.random_range(1..=3);
    // Body mutations first (they need the messages), then framing, then
    // delivery.
    let mut framing = 0;
    let mut delivery = Vec::new();
    for _ in 0..count {
        match rng.random_range(0..100) {
            0..=69 => {
                if messages.is_empty() {
                    messages.push(Vec::new());
                }
                let target = rng.random_range(0..messages.len());
                let name = mutate_message(rng, method, &mut messages, target);
                mutations.push(if messages.len() > 1 {
                    format!("{name}@msg{target}")
                } else {
                    name.to_string()
                });
            }
            70..=89 => framing += 1,
            _ => delivery.push(rng.random_range(0..4)),
        }
    }
    let mut frames: Vec<Frame> = messages.into_iter().map(Frame::new).collect();
    let mut trailing = Vec::new();
    for _ in 0..framing {
        let name = mutate_framing(rng, &mut frames, &mut trailing, &mut plan);
        mutations.push(name.to_string());
    }
    let mut body = Vec::new();
    for frame in &frames {
        frame.write(&mut body);
    }
    body.extend_from_slice(&trailing);
    plan.body = body;
    for choice in delivery {
        let name = match choice {
            0 => {
                // At most ~64 DATA frames per call: h2 servers answer a flood
                // of tiny frames with GOAWAY(ENHANCE_YOUR_CALM), by design.
                let tiny = rng.random_range(1..8);
                plan.split = Some(tiny.max(plan.body.len() / 64));
                "tiny-data-frames"
            }
            1 if !plan.body.is_empty() => {
                plan.body.truncate(rng.random_range(0..plan.body.len()));
                "stop-halfway"
            }
            2 => {
                if !plan.body.is_empty() {
                    plan.body.truncate(rng.random_range(0..plan.body.len()));
                }
                plan.ending = Ending::Reset;
                "stop-halfway-reset"
            }
            _ => {
                plan.timeout = Some(requests_timeout(rng).to_string());
                "grpc-timeout"
            }
        };
        mutations.push(name.to_string());
    }
    plan.mutations.append(&mut mutations);
    plan
}

fn requests_timeout(rng: &mut StdRng) -> &'static str {
    const VALUES: [&str; 10] = [
        "1n",
        "0n",
        "0S",
        "1m",
        "99999999H",
        "18446744073709551615H",
        "18446744073709551615n",
        "S",
        "-1S",
        "1x",
    ];
    VALUES[rng.random_range(0..VALUES.len())]
}

/// Mutates `messages[target]` (or the message list of a stream) and names
/// what it did.
fn mutate_message(
    rng: &mut StdRng,
    method: &Method,
    messages: &mut Vec<Vec<u8>>,
    target: usize,
) -> &'static str {
    let streaming = matches!(method.shape, Shape::ClientStream | Shape::Bidi);
    let choice = rng.random_range(0..15);
    match choice {
        12 if streaming && messages.len() > 1 => {
            // A stream that stops before its last messages.
            let keep = rng.random_range(1..messages.len());
            messages.truncate(keep);
            return "fewer-messages";
        }
        13 if streaming => {
            let copy = messages[target].clone();
            messages.insert(target, copy);
            return "duplicate-message";
        }
        _ => {}
    }
    let message = &mut messages[target];
    match choice {
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                if message.is_empty() {
                    break;
                }
                let bit = rng.random_range(0..message.len() * 8);
                message[bit / 8] ^= 1 << (bit % 8);
            }
            "bit-flip"
        }
        1 => {
            if !message.is_empty() {
                message.truncate(rng.random_range(0..message.len()));
            }
            "truncate"
        }
        2 => wrong_wire_type(rng, message),
        3 => {
            unknown_field(rng, message);
            "unknown-field"
        }
        4 => deep_nesting(rng, method.kind, message),
        5 => repeat_field(rng, message),
        6 => invalid_utf8(rng, method.kind, message),
        7 => huge_varint(rng, message),
        8 => {
            *message = random_bytes(rng, 0..256);
            "garbage"
        }
        9 => {
            let at = rng.random_range(0..=message.len());
            let garbage = random_bytes(rng, 1..32);
            message.splice(at..at, garbage);
            "garbage-insert"
        }
        10 => {
            message.clear();
            "empty-message"
        }
        11 => {
            // Another method's valid request: the right framing, the wrong
            // type.
            let other = requests::pick(rng);
            let mut foreign = requests::base(other.kind, rng);
            *message = foreign.swap_remove(0);
            "foreign-message"
        }
        _ => {
            // A field's value overwritten with random bytes of the same
            // length, structure intact.
            if let Some(fields) = proto::scan(message).filter(|f| !f.is_empty()) {
                let field = &fields[rng.random_range(0..fields.len())];
                for byte in &mut message[field.value.clone()] {
                    *byte = rng.random();
                }
                "field-value-garbage"
            } else {
                message.push(rng.random());
                "append-byte"
            }
        }
    }
}

/// A random top-level field, when the message parses.
fn some_field(rng: &mut StdRng, message: &[u8]) -> Option<Field> {
    let mut fields = proto::scan(message)?;
    if fields.is_empty() {
        return None;
    }
    let at = rng.random_range(0..fields.len());
    Some(fields.swap_remove(at))
}

/// A field key rewritten with another wire type (the value left as is).
fn wrong_wire_type(rng: &mut StdRng, message: &mut Vec<u8>) -> &'static str {
    let Some(field) = some_field(rng, message) else {
        // Nothing to retype: a key of every wire type instead.
        let wire = rng.random_range(0..8);
        put_key(message, rng.random_range(1..16), wire);
        return "wrong-wire-type-appended";
    };
    let mut wire = rng.random_range(0..8u8);
    if wire == field.wire {
        wire = (wire + 1) % 8;
    }
    let mut key = Vec::new();
    put_key(&mut key, field.number, wire);
    message.splice(field.key.clone(), key);
    "wrong-wire-type"
}

/// A field number nobody defined, of any wire type, between two fields.
fn unknown_field(rng: &mut StdRng, message: &mut Vec<u8>) {
    let number = match rng.random_range(0..4) {
        0 => rng.random_range(12..100),
        1 => rng.random_range(100..19000),
        2 => rng.random_range(19000..20000), // reserved by protobuf
        _ => (1 << 29) - 1,                  // the largest field number
    };
    let mut field = Vec::new();
    match rng.random_range(0..5) {
        0 => {
            put_key(&mut field, number, VARINT);
            put_varint(&mut field, rng.random());
        }
        1 => {
            put_key(&mut field, number, I64);
            field.extend_from_slice(&rng.random::<u64>().to_le_bytes());
        }
        2 => {
            put_key(&mut field, number, I32);
            field.extend_from_slice(&rng.random::<u32>().to_le_bytes());
        }
        3 => {
            let value = random_bytes(rng, 0..64);
            put_key(&mut field, number, LEN);
            put_varint(&mut field, value.len() as u64);
            field.extend_from_slice(&value);
        }
        _ => {
            put_key(&mut field, number, SGROUP);
            put_key(&mut field, 1, VARINT);
            put_varint(&mut field, 1);
            put_key(&mut field, number, EGROUP);
        }
    }
    let at = match proto::scan(message) {
        Some(fields) if !fields.is_empty() => {
            let i = rng.random_range(0..=fields.len());
            fields.get(i).map_or(message.len(), |f| f.span.start)
        }
        _ => message.len(),
    };
    message.splice(at..at, field);
}

/// Nesting the decoder must bound: groups inside groups, length-delimited
/// unknown fields inside each other, and for Txn a flood of ops and
/// compares.
fn deep_nesting(rng: &mut StdRng, kind: Kind, message: &mut Vec<u8>) -> &'static str {
    let depth = [10usize, 99, 100, 101, 1000, 20_000][rng.random_range(0..6)];
    match rng.random_range(0..3) {
        0 => {
            let number = rng.random_range(20..30);
            let mut nested = Vec::new();
            for _ in 0..depth {
                put_key(&mut nested, number, SGROUP);
            }
            for _ in 0..depth {
                put_key(&mut nested, number, EGROUP);
            }
            message.extend_from_slice(&nested);
            "deep-groups"
        }
        1 => {
            let mut nested = Vec::new();
            for _ in 0..depth.min(2000) {
                let mut outer = Vec::new();
                put_key(&mut outer, 21, LEN);
                put_varint(&mut outer, nested.len() as u64);
                outer.extend_from_slice(&nested);
                nested = outer;
            }
            message.extend_from_slice(&nested);
            "deep-unknown-messages"
        }
        _ if kind == Kind::Txn => {
            // success = 3 ops repeated: thousands of Put ops on one key.
            let op = proto::Msg::new()
                .msg(2, proto::Msg::new().bytes(1, b"k001").bytes(2, b"v"))
                .into_bytes();
            for _ in 0..rng.random_range(1000..20_000) {
                put_key(message, if rng.random_bool(0.5) { 3 } else { 4 }, LEN);
                put_varint(message, op.len() as u64);
                message.extend_from_slice(&op);
            }
            "many-txn-ops"
        }
        _ => {
            // The same field a thousand times over.
            for _ in 0..depth.min(5000) {
                put_key(message, 1, LEN);
                put_varint(message, 4);
                message.extend_from_slice(b"fuzz");
            }
            "repeated-field-flood"
        }
    }
}

/// One field written again several times (last one wins for scalars,
/// messages merge, repeated fields grow).
fn repeat_field(rng: &mut StdRng, message: &mut Vec<u8>) -> &'static str {
    let Some(field) = some_field(rng, message) else {
        return "repeat-field-none";
    };
    let copy = message[field.span.clone()].to_vec();
    for _ in 0..rng.random_range(1..50) {
        message.extend_from_slice(&copy);
    }
    "repeat-field"
}

/// Invalid UTF-8 in a length-delimited field (a `string` in the Tables,
/// health and reflection requests).
fn invalid_utf8(rng: &mut StdRng, kind: Kind, message: &mut Vec<u8>) -> &'static str {
    const BAD: [&[u8]; 7] = [
        b"\xff",
        b"\xc3",         // a cut two-byte sequence
        b"\xc0\xaf",     // an overlong '/'
        b"\xed\xa0\x80", // a UTF-16 surrogate
        b"\xf4\x90\x80\x80",
        b"fuzz\x80",
        b"\xe2\x82",
    ];
    let bad = BAD[rng.random_range(0..BAD.len())];
    let fields = proto::scan(message).unwrap_or_default();
    let strings: Vec<&Field> = fields.iter().filter(|f| f.wire == LEN).collect();
    if strings.is_empty() {
        // No string field yet: write field 1 (a name or a service).
        let mut field = Vec::new();
        put_key(&mut field, 1, LEN);
        put_varint(&mut field, bad.len() as u64);
        field.extend_from_slice(bad);
        message.splice(0..0, field);
        return if kind.has_strings() {
            "invalid-utf8-string"
        } else {
            "invalid-utf8-bytes"
        };
    }
    let field = strings[rng.random_range(0..strings.len())];
    let mut value = message[field.value.clone()].to_vec();
    let at = rng.random_range(0..=value.len());
    value.splice(at..at, bad.iter().copied());
    let mut replacement = message[field.key.clone()].to_vec();
    put_varint(&mut replacement, value.len() as u64);
    replacement.extend_from_slice(&value);
    message.splice(field.span.clone(), replacement);
    if kind.has_strings() {
        "invalid-utf8-string"
    } else {
        "invalid-utf8-bytes"
    }
}

/// A varint at its largest: a 10-byte value, an 11-byte (invalid) one, a
/// length that claims far more than follows, a field number past 2^29.
fn huge_varint(rng: &mut StdRng, message: &mut Vec<u8>) -> &'static str {
    const MAX10: [u8; 10] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    const OVERLONG: [u8; 11] = [0xff; 11];
    let field = some_field(rng, message);
    match (rng.random_range(0..4), field) {
        (0, Some(field)) if field.wire == VARINT => {
            message.splice(field.value.clone(), MAX10);
            "huge-varint-value"
        }
        (1, Some(field)) if field.length.is_some() => {
            let claim = [u64::MAX, 1 << 32, 1 << 31, (MAX_MESSAGE_BYTES as u64) + 1]
                [rng.random_range(0..4)];
            let mut length = Vec::new();
            put_varint(&mut length, claim);
            message.splice(field.length.clone().unwrap_or(0..0), length);
            "huge-length"
        }
        (2, Some(field)) => {
            let mut key = Vec::new();
            put_varint(&mut key, (u64::MAX << 3) | u64::from(field.wire));
            message.splice(field.key.clone(), key);
            "huge-field-number"
        }
        (_, Some(field)) if field.wire == VARINT => {
            message.splice(field.value.clone(), OVERLONG);
            "overlong-varint"
        }
        _ => {
            put_key(message, 1, VARINT);
            message.extend_from_slice(&OVERLONG);
            "overlong-varint-appended"
        }
    }
}

/// Lies in the 5-byte gRPC headers, extra frames, missing frames.
fn mutate_framing(
    rng: &mut StdRng,
    frames: &mut Vec<Frame>,
    trailing: &mut Vec<u8>,
    plan: &mut Plan,
) -> &'static str {
    if frames.is_empty() {
        frames.push(Frame::new(Vec::new()));
    }
    let target = rng.random_range(0..frames.len());
    let frame = &mut frames[target];
    let actual = frame.message.len() as u64;
    match rng.random_range(0..9) {
        0 => {
            let extra = [1u64, 2, 5, 1000][rng.random_range(0..4)];
            frame.length = Some(u32::try_from(actual + extra).unwrap_or(u32::MAX));
            "length-prefix-overlong"
        }
        1 => {
            frame.length = Some(
                [
                    u32::MAX,
                    (MAX_MESSAGE_BYTES as u32) + 1,
                    MAX_MESSAGE_BYTES as u32,
                ][rng.random_range(0..3)],
            );
            "length-prefix-huge"
        }
        2 if actual > 0 => {
            frame.length = Some(rng.random_range(0..actual) as u32);
            "length-prefix-short"
        }
        3 => {
            frame.flag = 1;
            if rng.random_bool(0.5) {
                plan.encoding = Some("gzip");
                "compressed-flag-gzip-not-gzip"
            } else {
                "compressed-flag-no-encoding"
            }
        }
        4 => {
            frame.flag = rng.random_range(2..=255);
            "bad-flag-byte"
        }
        5 => {
            let copy = frame.clone();
            frames.push(copy);
            "extra-frame"
        }
        6 => {
            frames.clear();
            "no-frames"
        }
        7 => {
            trailing.extend(random_bytes(rng, 1..5));
            "partial-header-after"
        }
        _ => {
            // Supported (gzip, zstd on KV), none, and unknown ones.
            plan.encoding = Some(["gzip", "zstd", "identity", "snappy"][rng.random_range(0..4)]);
            "grpc-encoding-header"
        }
    }
}

/// What the server's gRPC layer will make of `body` for `kind`: the
/// reasons it is malformed at the gRPC or protobuf level, as tonic parses
/// it (empty when every frame is well-formed and decodes as the request
/// type). gRPC answers such requests with INTERNAL by convention, so an
/// INTERNAL from the framework is accepted for them and for nothing else.
pub fn anomalies(plan: &Plan) -> Vec<String> {
    let body = &plan.body;
    let mut reasons = Vec::new();
    let mut at = 0;
    let mut messages = 0;
    while at < body.len() {
        if body.len() - at < 5 {
            reasons.push(format!("{} bytes of a frame header", body.len() - at));
            break;
        }
        let flag = body[at];
        let length =
            u32::from_be_bytes([body[at + 1], body[at + 2], body[at + 3], body[at + 4]]) as usize;
        match (flag, plan.encoding) {
            (0, _) => {}
            (1, None) => reasons.push("compressed flag without grpc-encoding".into()),
            (1, Some(encoding)) => reasons.push(format!("compressed flag, body is not {encoding}")),
            (other, _) => reasons.push(format!("flag byte {other}")),
        }
        if length > MAX_MESSAGE_BYTES {
            reasons.push(format!("length prefix {length} over the limit"));
            break;
        }
        if body.len() - at - 5 < length {
            reasons.push(format!(
                "length prefix {length}, {} bytes follow",
                body.len() - at - 5
            ));
            break;
        }
        let message = &body[at + 5..at + 5 + length];
        if flag == 0 {
            if let Err(err) = plan.method.kind.decode_request(message) {
                reasons.push(format!("message {messages}: {err}"));
            }
        }
        messages += 1;
        at += 5 + length;
    }
    if messages == 0 {
        reasons.push("no message".into());
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_index_give_the_same_bytes() {
        for index in 0..500 {
            let (a, b) = (plan(42, index), plan(42, index));
            assert_eq!(a.body, b.body);
            assert_eq!(a.mutations, b.mutations);
            assert_eq!(a.method.path, b.method.path);
        }
        let differ = (0..50)
            .filter(|&i| plan(1, i).body != plan(2, i).body)
            .count();
        assert!(differ > 40, "seeds 1 and 2 agree on {} of 50", 50 - differ);
    }

    #[test]
    fn no_plan_names_the_data_table() {
        for index in 0..10_000 {
            let plan = plan(7, index);
            assert!(!touches_data_table(&plan.body), "index {index}");
            if plan.encoding.is_some_and(|e| e != "identity") {
                assert!(!could_decompress(&plan.body), "index {index}");
            }
        }
        assert!(touches_data_table(b"\x0a\x09fuzz-data"));
    }

    #[test]
    fn valid_plans_have_no_anomalies_and_framing_lies_do() {
        let mut valid = 0;
        for index in 0..3000 {
            let plan = plan(3, index);
            if plan.mutations == ["valid"] {
                valid += 1;
                if plan.method.kind != Kind::TablesCreate {
                    assert_eq!(anomalies(&plan), Vec::<String>::new(), "{index}");
                }
            }
            let lies = ["length-prefix-overlong", "no-frames", "bad-flag-byte"];
            if plan.mutations.len() == 1 && lies.contains(&plan.mutations[0].as_str()) {
                assert!(
                    !anomalies(&plan).is_empty(),
                    "{index}: {:?}",
                    plan.mutations
                );
            }
        }
        assert!(valid > 200);
    }
}
