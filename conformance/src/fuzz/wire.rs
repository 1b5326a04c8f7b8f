//! Calls as raw HTTP/2 streams (the `h2` crate): the request body is sent
//! byte for byte as planned, so the fuzzer can lie in gRPC length prefixes,
//! set any flag byte and stop a stream halfway; the answer is read frame by
//! frame and its `grpc-status` taken from the headers or the trailers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::Mutex;

use super::proto::percent_decode;

/// Most answer bytes read from one call; a longer answer is cut there.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A gRPC status, with the answer's messages (only for status OK, and
    /// only as many as were read).
    Status {
        code: i32,
        message: String,
        responses: Vec<Bytes>,
        /// The answer's body did not split into whole gRPC frames.
        torn: bool,
    },
    /// The fuzzer stopped reading a stream that was still open (a health
    /// Watch, or an answer longer than it reads).
    Cut {
        responses: Vec<Bytes>,
    },
    /// The fuzzer reset the stream itself (a stream that stops halfway).
    ClientReset,
    /// The server reset the stream, or answered without a gRPC status.
    StreamError(String),
    /// An HTTP status other than 200.
    Http(u16),
    /// The connection failed.
    ConnectionError(String),
    Timeout,
}

impl Outcome {
    /// The answer's name in the summary: a gRPC code, or how it failed.
    pub fn label(&self) -> String {
        match self {
            Outcome::Status { code, .. } => code_name(*code).to_string(),
            Outcome::Cut { .. } => "(stream cut by fuzzer)".into(),
            Outcome::ClientReset => "(reset by fuzzer)".into(),
            Outcome::StreamError(_) => "(stream error)".into(),
            Outcome::Http(status) => format!("(HTTP {status})"),
            Outcome::ConnectionError(_) => "(connection error)".into(),
            Outcome::Timeout => "(timeout)".into(),
        }
    }
}

/// gRPC's name for `code`.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Cancelled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "(bad grpc-status)",
    }
}

/// A request: the bytes and how to deliver them.
pub struct Call<'a> {
    pub path: &'a str,
    pub body: &'a [u8],
    pub split: Option<usize>,
    /// Reset the stream after the body instead of ending it.
    pub reset: bool,
    pub encoding: Option<&'a str>,
    pub timeout_header: Option<&'a str>,
    /// Stop reading after this many answer messages (a stream that does
    /// not end by itself).
    pub max_responses: usize,
    pub timeout: Duration,
}

/// One HTTP/2 connection to a listener, opened again when it breaks.
pub struct Connection {
    address: SocketAddr,
    sender: Mutex<Option<SendRequest<Bytes>>>,
}

impl Connection {
    pub fn new(address: SocketAddr) -> Arc<Self> {
        Arc::new(Connection {
            address,
            sender: Mutex::new(None),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    async fn sender(&self) -> Result<SendRequest<Bytes>> {
        let mut slot = self.sender.lock().await;
        if let Some(sender) = slot.as_ref() {
            return Ok(sender.clone());
        }
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(self.address),
        )
        .await
        .context("connecting: timed out")?
        .with_context(|| format!("connecting to {}", self.address))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            .max_concurrent_reset_streams(10_000)
            .handshake::<_, Bytes>(tcp)
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }

    /// Forgets the connection (it failed): the next call opens a new one.
    async fn drop_sender(&self) {
        *self.sender.lock().await = None;
    }

    /// Sends `call` and reads its answer.
    pub async fn call(&self, call: &Call<'_>) -> Outcome {
        match tokio::time::timeout(call.timeout, self.exchange(call)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(Failure::Connection(err))) => {
                self.drop_sender().await;
                Outcome::ConnectionError(err)
            }
            Ok(Err(Failure::Stream(err))) => Outcome::StreamError(err),
            Err(_) => Outcome::Timeout,
        }
    }

    async fn exchange(&self, call: &Call<'_>) -> Result<Outcome, Failure> {
        let sender = self
            .sender()
            .await
            .map_err(|err| Failure::Connection(format!("{err:#}")))?;
        let mut sender = sender
            .ready()
            .await
            .map_err(|err| Failure::Connection(err.to_string()))?;
        let mut request = http::Request::post(format!("http://{}{}", self.address, call.path))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(encoding) = call.encoding {
            request = request.header("grpc-encoding", encoding);
        }
        if let Some(timeout) = call.timeout_header {
            request = request.header("grpc-timeout", timeout);
        }
        let request = request
            .body(())
            .map_err(|err| Failure::Stream(err.to_string()))?;
        let (answer, mut stream) = sender
            .send_request(request, false)
            .map_err(stream_failure)?;
        let body = Bytes::copy_from_slice(call.body);
        let pieces: Vec<Bytes> = match call.split {
            Some(size) if size > 0 => (0..body.len())
                .step_by(size)
                .map(|at| body.slice(at..(at + size).min(body.len())))
                .collect(),
            _ => vec![body],
        };
        let last = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            let end = i + 1 == last && !call.reset;
            // A failure here is the server having answered and closed the
            // stream already: the answer says why.
            if stream.send_data(piece, end).is_err() {
                break;
            }
        }
        if last == 0 && !call.reset {
            let _ = stream.send_data(Bytes::new(), true);
        }
        if call.reset {
            // Give the bytes a moment to leave before the reset overtakes
            // them.
            tokio::time::sleep(Duration::from_millis(2)).await;
            stream.send_reset(h2::Reason::CANCEL);
            return Ok(Outcome::ClientReset);
        }
        let response = answer.await.map_err(stream_failure)?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Ok(Outcome::Http(parts.status.as_u16()));
        }
        if let Some(outcome) = status_of(&parts.headers) {
            // Trailers-only: no messages.
            return Ok(outcome);
        }
        let mut buffer: Vec<u8> = Vec::new();
        let mut responses = Vec::new();
        let mut read = 0;
        while let Some(data) = body.data().await {
            let data = data.map_err(stream_failure)?;
            let _ = body.flow_control().release_capacity(data.len());
            read += data.len();
            buffer.extend_from_slice(&data);
            split_frames(&mut buffer, &mut responses);
            if responses.len() >= call.max_responses || read > MAX_ANSWER_BYTES {
                // Dropping the stream resets it.
                return Ok(Outcome::Cut { responses });
            }
        }
        let trailers = body.trailers().await.map_err(stream_failure)?;
        let torn = !buffer.is_empty();
        match trailers.as_ref().and_then(status_of) {
            Some(Outcome::Status { code, message, .. }) => Ok(Outcome::Status {
                code,
                message,
                responses,
                torn,
            }),
            _ => Ok(Outcome::StreamError(
                "no grpc-status in the trailers".into(),
            )),
        }
    }
}

enum Failure {
    Connection(String),
    Stream(String),
}

fn stream_failure(err: h2::Error) -> Failure {
    let text = match err.reason() {
        Some(reason) => format!("{err} (reason {reason:?})"),
        None => format!("{err} ({err:?})"),
    };
    if err.is_go_away() || err.is_io() {
        Failure::Connection(text)
    } else {
        Failure::Stream(text)
    }
}

/// Moves every whole gRPC frame at the front of `buffer` into `out`.
fn split_frames(buffer: &mut Vec<u8>, out: &mut Vec<Bytes>) {
    let mut at = 0;
    while buffer.len() - at >= 5 {
        let length = u32::from_be_bytes([
            buffer[at + 1],
            buffer[at + 2],
            buffer[at + 3],
            buffer[at + 4],
        ]) as usize;
        if buffer.len() - at - 5 < length {
            break;
        }
        out.push(Bytes::copy_from_slice(&buffer[at + 5..at + 5 + length]));
        at += 5 + length;
    }
    buffer.drain(..at);
}

/// The gRPC status in `headers`, when they carry one.
fn status_of(headers: &http::HeaderMap) -> Option<Outcome> {
    let code = headers.get("grpc-status")?;
    let code = code
        .to_str()
        .ok()
        .and_then(|text| text.parse::<i32>().ok())
        .unwrap_or(-1);
    let message = headers
        .get("grpc-message")
        .map(|value| percent_decode(&String::from_utf8_lossy(value.as_bytes())))
        .unwrap_or_default();
    Some(Outcome::Status {
        code,
        message,
        responses: Vec::new(),
        torn: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_across_reads() {
        let mut buffer = vec![0, 0, 0, 0, 2, 7, 7, 0, 0, 0];
        let mut out = Vec::new();
        split_frames(&mut buffer, &mut out);
        assert_eq!(out, vec![Bytes::from_static(&[7, 7])]);
        assert_eq!(buffer, vec![0, 0, 0]);
        buffer.extend_from_slice(&[0, 0]);
        split_frames(&mut buffer, &mut out);
        assert_eq!(out.len(), 2);
        assert!(buffer.is_empty());
    }
}
