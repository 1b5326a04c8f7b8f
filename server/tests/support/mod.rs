//! Helpers shared by the integration tests that start the real binary.

/// A loopback address with a port that was free a moment ago.
pub fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .expect("free port")
}
