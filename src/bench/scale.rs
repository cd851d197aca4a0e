//! The connection-scale phase: many idle, welcomed clients on one router,
//! to see what a large fleet costs in router memory and whether the router
//! really tracks them all. The clients live in `vigil-bench clients` child
//! processes, at most `PER_CHILD` each, to stay under the per-process
//! descriptor limit.

use super::backend;
use super::child::{self, ChildProc, Shutdown};
use super::BenchError;
use std::time::{Duration, Instant};

const PER_CHILD: usize = 5000;
/// Children have 90 s to connect; this leaves them time to say so.
const READY_LIMIT: Duration = Duration::from_secs(100);
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct ScaleResult {
    pub wanted: usize,
    pub welcomed: usize,
    /// From starting the children until the last one was ready.
    pub took: Duration,
    /// The router's own `clients` figure from its status.
    pub router_clients: Option<u64>,
    pub idle_rss_mib: Option<f64>,
    pub rss_mib: Option<f64>,
    pub peak_mib: Option<f64>,
    /// Lines from children that had something to complain about.
    pub child_warnings: Vec<String>,
}

/// Connects `wanted` clients to the router at `client` (pid `router_pid`,
/// back end `backend`) and measures the router while they are connected.
pub fn measure(
    router_pid: u32,
    client: &str,
    backend: &str,
    wanted: usize,
) -> Result<ScaleResult, BenchError> {
    let mut result = ScaleResult {
        wanted,
        idle_rss_mib: child::memory_mib(router_pid, "VmRSS"),
        ..ScaleResult::default()
    };
    let began = Instant::now();
    let mut children = Vec::new();
    for (index, count) in split(wanted, PER_CHILD).into_iter().enumerate() {
        children.push(spawn_clients(index, client, count)?);
    }
    for proc in &mut children {
        let left = READY_LIMIT.saturating_sub(began.elapsed());
        let ready = proc.wait_ready(left)?;
        let welcomed = ready.get("welcomed").and_then(|n| n.parse::<usize>().ok());
        result.welcomed += welcomed.unwrap_or(0);
    }
    result.took = began.elapsed();
    result.router_clients = backend::status(backend).ok().map(|s| s.clients);
    result.rss_mib = child::memory_mib(router_pid, "VmRSS");
    result.peak_mib = child::memory_mib(router_pid, "VmHWM");
    for proc in children {
        let stopped = proc.stop(Shutdown::CloseStdin, STOP_GRACE);
        result.child_warnings.extend(stopped.log.notable);
    }
    Ok(result)
}

fn spawn_clients(index: usize, endpoint: &str, count: usize) -> Result<ChildProc, BenchError> {
    let count = count.to_string();
    let args = ["bench", "clients", "--connect", endpoint, "--count", &count];
    let command = child::vigil_command(&args)?;
    ChildProc::spawn(&format!("clients-{index}"), command)
}

/// `total` in parts of at most `most`, as even as possible.
fn split(total: usize, most: usize) -> Vec<usize> {
    let parts = total.div_ceil(most.max(1));
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_parts_even_and_small() {
        assert_eq!(split(10_000, 5000), vec![5000, 5000]);
        assert_eq!(split(10_001, 5000), vec![3334, 3334, 3333]);
        assert_eq!(split(7, 5000), vec![7]);
        assert!(split(0, 5000).is_empty());
    }
}
