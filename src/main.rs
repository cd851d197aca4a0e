//! `vigil`: one binary, one subcommand per role.
//!
//! `main` is thin: it picks the subcommand, runs it, and turns its error into
//! one line on stderr and the exit status (`Error::exit_code`).

use vigil::error::Error;
use vigil::{agent, config, curve, router, scheduler, send, sink, standalone, status, web};

const USAGE: &str = "\
usage: vigil <command>

commands:
  router          run a router (foreground; configured by VIGIL_* variables)
  agent           run the agent of this host (foreground)
  send TYPE ...   hand a message to the local agent (for scripts and cron)
  sink TYPE|all   run the back-end sink(s) of a message type (foreground)
  scheduler       run the plugin scheduler (foreground)
  status          show clients, plugin states, notifications, routers
  web             serve the fleet's state in a browser (and as JSON)
  standalone      run router, sinks, scheduler, agent and web together
  keygen PATH     write a CURVE key pair: PATH (secret, 0600) and PATH.pub
  help            show this text
  --version       show the version

The benchmarks are the separate `vigil-bench` binary.
See README.md for every VIGIL_* variable and its default.";

fn main() {
    if let Err(e) = check_log_spec() {
        eprintln!("vigil: {e}");
        std::process::exit(2);
    }
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::new().filter_or("VIGIL_LOG", "info"));
    vigil::notify::quiet_library_logs(&mut logger);
    logger.init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("help");
    if let Err(e) = run(command, &args[1.min(args.len())..]) {
        eprintln!("vigil {command}: {e}");
        std::process::exit(e.exit_code());
    }
}

/// A `VIGIL_LOG` that env_logger would warn about and then ignore (logging
/// at its default instead) stops the program like any other bad setting.
fn check_log_spec() -> Result<(), vigil::config::ConfigError> {
    let Ok(spec) = std::env::var("VIGIL_LOG") else {
        return Ok(());
    };
    env_filter::Builder::new()
        .try_parse(&spec)
        .map(|_| ())
        .map_err(|e| vigil::config::ConfigError::new("VIGIL_LOG", &spec, e.to_string()))
}

fn run(command: &str, rest: &[String]) -> Result<(), Error> {
    match command {
        "router" => run_router(rest),
        "agent" => agent::command(rest),
        "send" => send::command(rest),
        "sink" => sink::command(rest),
        "scheduler" => scheduler::command(rest),
        "status" => status::command(rest),
        "web" => web::command(rest),
        "standalone" => standalone::command(rest),
        "keygen" => curve::keygen_command(rest),
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
    const USAGE: &str = "usage: vigil router

Runs a router in the foreground. Configured by VIGIL_* variables; see README.md.";
    if vigil::error::help_or_no_args(args, USAGE)? {
        return Ok(());
    }
    let env = config::Env::from_process()?;
    let config = router::config::RouterConfig::from_env(&env)?;
    router::run(config)
}
