//! A closed-loop load generator with the semantics of etcd's `benchmark`
//! tool: `clients` workers, each sending its next request when the last one
//! answered, over `conns` connections shared round-robin; stops after
//! `total` requests or after `duration`. Every latency is kept, so the
//! percentiles are exact.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    Total(u64),
    Duration(Duration),
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies of successful requests, ascending.
    pub latencies: Vec<Duration>,
    /// The first error seen, for the operator.
    pub first_error: Option<String>,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile (0..=100) of the latencies.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    pub fn fastest(&self) -> Duration {
        self.latencies.first().copied().unwrap_or_default()
    }

    pub fn slowest(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }
}

/// Runs `request(connection, client, sequence)` from `clients` workers
/// until `stop`. `request` returns an error text for a failed request.
pub async fn run<F, Fut>(clients: usize, conns: usize, stop: Stop, request: F) -> Report
where
    F: Fn(usize, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let request = Arc::new(request);
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let next_conn = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = match stop {
        Stop::Duration(duration) => Some(started + duration),
        Stop::Total(_) => None,
    };
    let limit = match stop {
        Stop::Total(total) => total,
        Stop::Duration(_) => u64::MAX,
    };
    let mut workers = Vec::with_capacity(clients);
    for client in 0..clients {
        let (request, issued, errors, first_error) = (
            request.clone(),
            issued.clone(),
            errors.clone(),
            first_error.clone(),
        );
        // Clients share the connections round-robin, as etcd's tool does.
        let conn = next_conn.fetch_add(1, Ordering::Relaxed) % conns.max(1);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let sequence = issued.fetch_add(1, Ordering::Relaxed);
                if sequence >= limit || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let sent = Instant::now();
                match request(conn, client, sequence).await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(err) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert(err);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        if let Ok(mut mine) = worker.await {
            latencies.append(&mut mine);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let errors = errors.load(Ordering::Relaxed);
    let first_error = first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Report {
        requests: latencies.len() as u64,
        errors,
        elapsed,
        latencies,
        first_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_total_run_sends_exactly_that_many_requests() {
        let report = run(4, 2, Stop::Total(100), |_, _, _| async { Ok(()) }).await;
        assert_eq!(report.requests, 100);
        assert_eq!(report.errors, 0);
        assert_eq!(report.latencies.len(), 100);
    }

    #[tokio::test]
    async fn errors_are_counted_not_timed() {
        let report = run(2, 1, Stop::Total(10), |_, _, sequence| async move {
            if sequence % 2 == 0 {
                Err("even".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(report.requests + report.errors, 10);
        assert_eq!(report.errors, 5);
        assert_eq!(report.first_error.as_deref(), Some("even"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let report = Report {
            requests: 100,
            errors: 0,
            elapsed: Duration::from_secs(1),
            latencies: (1..=100).map(Duration::from_millis).collect(),
            first_error: None,
        };
        assert_eq!(report.percentile(50.0), Duration::from_millis(50));
        assert_eq!(report.percentile(99.0), Duration::from_millis(99));
        assert_eq!(report.percentile(99.9), Duration::from_millis(100));
        assert_eq!(report.percentile(10.0), Duration::from_millis(10));
        assert_eq!(report.fastest(), Duration::from_millis(1));
        assert_eq!(report.slowest(), Duration::from_millis(100));
        assert!((report.per_second() - 100.0).abs() < 1e-9);
    }
}
