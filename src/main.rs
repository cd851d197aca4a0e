//! `vigil`: one binary, one subcommand per role.
//!
//! `main` is thin: it picks the subcommand, runs it, and turns its error into
//! one line on stderr and the exit status (`Error::exit_code`).

mod bench;
mod config;
mod doorbell;
mod error;
mod json_scan;
mod protocol;
mod router;
mod signals;
mod supervisor;
mod zmq_send;

use error::Error;

const USAGE: &str = "\
usage: vigil <command>

commands:
  router          run a router (foreground; configured by VIGIL_* variables)
  bench router    measure the router against libzmq's zmq_proxy
  help            show this text
  --version       show the version

See README.md for every VIGIL_* variable and its default.";

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("VIGIL_LOG", "info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("help");
    if let Err(e) = run(command, &args[1.min(args.len())..]) {
        eprintln!("vigil {command}: {e}");
        std::process::exit(e.exit_code());
    }
}

fn run(command: &str, rest: &[String]) -> Result<(), Error> {
    match command {
        "router" => run_router(rest),
        "bench" => bench::run(rest).map_err(|e| Error::Bench {
            usage: e.is_usage(),
            message: e.to_string(),
        }),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        "--version" | "-V" => {
            println!("vigil {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        other => Err(Error::Usage(format!("unknown command {other:?}\n{USAGE}"))),
    }
}

fn run_router(args: &[String]) -> Result<(), Error> {
    if let Some(arg) = args.first() {
        if arg == "--help" || arg == "-h" {
            println!("usage: vigil router\n\nRuns a router in the foreground. Configured by VIGIL_* variables; see README.md.");
            return Ok(());
        }
        return Err(Error::Usage(format!(
            "unexpected argument {arg:?} (configure with VIGIL_* variables)"
        )));
    }
    let env = config::Env::from_process()?;
    let config = router::config::RouterConfig::from_env(&env)?;
    router::run(config)
}
