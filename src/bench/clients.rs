//! `vigil-bench clients`: a child process holding many idle, welcomed
//! clients for the connection-scale phase. It exists because each ZeroMQ
//! socket costs a TCP descriptor and a mailbox eventfd, so 10 000 clients
//! would not fit under one process's 20 000-descriptor limit.

use super::fleet::{self, ContextPool, Dealer};
use super::options::{self, Parsed};
use super::BenchError;
use std::io;
use std::time::{Duration, Instant};

/// Connecting in batches, each waiting for its welcomes, keeps the
/// router's listen backlog (libzmq's default is 100) from overflowing,
/// which would stall connects for a second per SYN retry.
const BATCH: usize = 100;
/// The whole connect-and-handshake stage gives up after this.
const CONNECT_LIMIT: Duration = Duration::from_secs(90);

const HELP: &str = "usage: vigil-bench clients --connect EP --count N
(started by `vigil-bench router`; holds N welcomed clients until its stdin closes)
";

pub fn run(args: &[String]) -> Result<(), BenchError> {
    let opts = match options::parse_clients(args)? {
        Parsed::Help => {
            print!("{HELP}");
            return Ok(());
        }
        Parsed::Run(opts) => opts,
    };
    let began = Instant::now();
    let (dealers, welcomed) = connect_in_batches(&opts.connect, opts.count, began + CONNECT_LIMIT)?;
    let seconds = began.elapsed().as_secs_f64();
    eprintln!(
        "ready: welcomed={welcomed} wanted={} seconds={seconds:.2}",
        opts.count
    );
    // Hold the connections until the parent closes our stdin, or dies.
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    drop(dealers);
    Ok(())
}

/// Connects `count` clients, stopping early at the first batch that is not
/// fully welcomed by `deadline`; returns the clients and the welcomed count.
fn connect_in_batches(
    endpoint: &str,
    count: usize,
    deadline: Instant,
) -> Result<(Vec<Dealer>, usize), BenchError> {
    let mut pool = ContextPool::default();
    let mut dealers = Vec::with_capacity(count);
    let mut welcomed = 0;
    while dealers.len() < count {
        let size = BATCH.min(count - dealers.len());
        let batch = fleet::connect_all(&mut pool, endpoint, size, fleet::DEFAULT_HWM, None)?;
        for dealer in &batch {
            dealer.send_hello()?;
        }
        let got = fleet::await_welcomes(&batch, deadline)?;
        welcomed += got;
        dealers.extend(batch);
        if got < size {
            break;
        }
    }
    Ok((dealers, welcomed))
}
