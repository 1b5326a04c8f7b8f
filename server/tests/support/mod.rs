//! Helpers shared by the integration tests that start the real binary.

use std::sync::atomic::{AtomicU16, Ordering};

/// Ports below the kernel's ephemeral range (Linux: 32768-60999). A port
/// that the kernel handed out with `bind(0)` and this test released can be
/// taken again at once by any outgoing connection of a concurrent test,
/// before the server process binds it ("Address already in use" seen in
/// CI); ports below the range are only ever taken on purpose.
const FIRST_PORT: u16 = 20_000;
const PORTS: u16 = 12_000;

/// A loopback port that was free a moment ago, outside the ephemeral range.
#[allow(dead_code)] // not every test binary uses both helpers
pub fn free_port() -> u16 {
    // Test binaries run one after another; each starts at its own offset.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(PORTS)) as u16;
    for _ in 0..PORTS {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % PORTS;
        let port = FIRST_PORT + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST_PORT}..{}", FIRST_PORT + PORTS)
}

/// A loopback address with a port that was free a moment ago.
#[allow(dead_code)]
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}
