//! The bounds on what local processes may declare.
//!
//! The plugin manager keeps each local process's declarations until that
//! process registers again, and scans them all on every registration and
//! every scheduled run. Whoever can reach the intake socket may register,
//! under any process name it likes, so without bounds made-up names would
//! grow the agent's memory and its scans without end.
//!
//! The intake keeps a [`LocalBook`] to refuse (with a `bad_field` reply)
//! a registration over the bounds before it reaches anyone; the manager
//! keeps its own, so nothing can take its state past them either (the two
//! books see the same registrations but for any a full channel dropped).

use std::collections::HashMap;

/// Local processes with declarations, at most.
pub const PROCESSES_MAX: usize = 128;
/// Plugins one local process may declare, at most.
pub const PLUGINS_PER_PROCESS_MAX: usize = 256;
/// Plugins all local processes together may declare, at most.
pub const PLUGINS_MAX: usize = 1024;

/// How many plugins each local process declares now.
#[derive(Debug, Default)]
pub struct LocalBook {
    counts: HashMap<String, usize>,
    total: usize,
}

impl LocalBook {
    /// Records that `process` now declares `plugins` plugins (its new set
    /// replaces the old one), or says why that is over the bounds and
    /// records nothing. A process declaring none frees its place.
    pub fn admit(&mut self, process: &str, plugins: usize) -> Result<(), String> {
        let old = self.counts.get(process).copied();
        if plugins == 0 {
            self.total -= old.unwrap_or(0);
            self.counts.remove(process);
            return Ok(());
        }
        if plugins > PLUGINS_PER_PROCESS_MAX {
            return Err(format!(
                "{plugins} plugins declared; a process may declare at most \
                 {PLUGINS_PER_PROCESS_MAX}"
            ));
        }
        if old.is_none() && self.counts.len() >= PROCESSES_MAX {
            return Err(format!(
                "{PROCESSES_MAX} local processes already declare plugins on this agent, \
                 the most it keeps; one frees its place by registering with no plugins"
            ));
        }
        let total = self.total - old.unwrap_or(0) + plugins;
        if total > PLUGINS_MAX {
            return Err(format!(
                "local processes would declare {total} plugins on this agent; the most \
                 it keeps is {PLUGINS_MAX}"
            ));
        }
        self.total = total;
        self.counts.insert(process.to_string(), plugins);
        Ok(())
    }

    #[cfg(test)]
    pub fn processes(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_bounded_and_freed_by_an_empty_registration() {
        let mut book = LocalBook::default();
        for i in 0..PROCESSES_MAX {
            book.admit(&format!("p{i}"), 1).unwrap();
        }
        let err = book.admit("one-more", 1).unwrap_err();
        assert!(err.contains("already declare plugins"), "{err}");
        // A known process may still change its set.
        book.admit("p0", 2).unwrap();
        assert_eq!(book.processes(), PROCESSES_MAX);
        book.admit("p1", 0).unwrap();
        book.admit("one-more", 1).unwrap();
        // Registering with no plugins takes no place.
        assert!(book.admit("no-plugins", 0).is_ok());
        assert_eq!(book.processes(), PROCESSES_MAX);
    }

    #[test]
    fn declarations_are_bounded_per_process_and_in_all() {
        let mut book = LocalBook::default();
        let err = book.admit("big", PLUGINS_PER_PROCESS_MAX + 1).unwrap_err();
        assert!(err.contains("at most"), "{err}");
        assert_eq!(book.processes(), 0, "a refusal records nothing");
        let full = PLUGINS_MAX / PLUGINS_PER_PROCESS_MAX;
        for i in 0..full {
            book.admit(&format!("p{i}"), PLUGINS_PER_PROCESS_MAX)
                .unwrap();
        }
        let err = book.admit("late", 1).unwrap_err();
        assert!(err.contains(&format!("is {PLUGINS_MAX}")), "{err}");
        // Replacing a set counts the new one instead of the old.
        book.admit("p0", 1).unwrap();
        book.admit("late", PLUGINS_PER_PROCESS_MAX - 1).unwrap();
    }
}
