//! `--pin-target CORE`: the forwarding process (the router, or the
//! zmq_proxy baseline) on one core and the load generator on the others,
//! as on a router host whose cores are its own. Without it the two share
//! every core, and the router's latency includes waiting for the load
//! generator to leave a core.

use super::{BenchError, Doing};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The CPU set of `cores`, for sched_setaffinity.
fn cpu_set(cores: impl Iterator<Item = usize>) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for core in cores {
        // SAFETY: CPU_SET only writes inside `set` for core < CPU_SETSIZE,
        // which the callers' core counts stay far below.
        unsafe { libc::CPU_SET(core, &mut set) };
    }
    set
}

/// Pins the calling thread, and so every thread and child it starts
/// later, to every core but `target`. Call before any thread starts.
pub fn pin_self_away_from(target: usize, cores: usize) -> Result<(), BenchError> {
    if target >= cores || cores < 2 {
        return Err(BenchError::usage(format!(
            "--pin-target {target}: this machine has {cores} core(s); it needs another for the load generator"
        )));
    }
    let set = cpu_set((0..cores).filter(|&c| c != target));
    // SAFETY: pid 0 is the calling thread; `set` lives across the call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).doing("pinning the load generator");
    }
    Ok(())
}

/// Makes `command`'s process run on `target` alone (set in the child
/// before exec, so every thread it starts inherits it).
pub fn pin_child(command: &mut Command, target: usize) {
    // SAFETY: sched_setaffinity is async-signal-safe and nothing else runs
    // between fork and exec here.
    unsafe {
        command.pre_exec(move || {
            let set = cpu_set(std::iter::once(target));
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
