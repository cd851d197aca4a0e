//! `vigil status`: the state of the fleet, for an operator: clients and
//! whether they are up, plugin states with their output, recent
//! notifications, and each router's counters. `--json` gives the same as
//! one JSON object for scripts.

pub mod render;
pub mod snapshot;

use crate::config::Env;
use crate::error::Error;
use crate::scheduler::config as shared;
use snapshot::Snapshot;

const USAGE: &str = "usage: vigil status [--json] [--notifications N]

Shows clients (up/down, last seen), plugin states (OK/WARNING/CRITICAL/
UNKNOWN with their output), the N most recent notifications (default 10)
and each router's counters. Reads VIGIL_DB and asks every router in
VIGIL_BACKENDS for {\"op\":\"status\"}.";

/// The command line, parsed.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    json: bool,
    notifications: usize,
}

fn parse(args: &[String]) -> Result<Option<Options>, Error> {
    let mut options = Options {
        json: false,
        notifications: 10,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => options.json = true,
            "--notifications" | "-n" => {
                let value = args
                    .next()
                    .ok_or_else(|| Error::Usage(format!("{arg} needs a number\n{USAGE}")))?;
                options.notifications =
                    value.parse().ok().filter(|n| *n <= 10_000).ok_or_else(|| {
                        Error::Usage(format!("{arg} {value:?}: expected 0 to 10000"))
                    })?;
            }
            "--help" | "-h" => return Ok(None),
            other => {
                return Err(Error::Usage(format!(
                    "unexpected argument {other:?}\n{USAGE}"
                )))
            }
        }
    }
    Ok(Some(options))
}

pub fn command(args: &[String]) -> Result<(), Error> {
    let Some(options) = parse(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let env = Env::from_process()?;
    let db = shared::db_path(&env)?;
    let backends = shared::backends(&env)?;
    let grace = shared::heartbeat_grace(&env)?;
    let timeout = shared::backend_timeout(&env)?;
    let keys = crate::curve::client_keys(&env)?;

    let mut store = snapshot::open_store(&db).map_err(Error::Runtime)?;
    let now = crate::store::now();
    let (clients, plugins, notifications) =
        snapshot::read_store(&mut store, now, grace, options.notifications)
            .map_err(|e| Error::Runtime(format!("store {db}: {e}")))?;
    let snapshot = Snapshot {
        generated_at: now,
        db: db.to_string(),
        clients,
        plugins,
        notifications,
        routers: snapshot::routers(&backends, timeout, keys),
    };
    if options.json {
        let text = serde_json::to_string_pretty(&snapshot)
            .map_err(|e| Error::Runtime(format!("encoding JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", render::render(&snapshot));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        let o = parse(&args(&["--json", "-n", "3"])).unwrap().unwrap();
        assert_eq!(
            o,
            Options {
                json: true,
                notifications: 3
            }
        );
        assert!(parse(&args(&["--help"])).unwrap().is_none());
        assert!(parse(&args(&["-n"])).is_err());
        assert!(parse(&args(&["-n", "x"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }
}
