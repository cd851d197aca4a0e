//! Command lines of `vigil-bench router` and of its two hidden helpers, and
//! the few VIGIL_* values the benchmark itself must know, kept apart from
//! the socket code so they can be tested as plain data.

use super::BenchError;
use std::time::Duration;

pub const ROUTER_USAGE: &str = "\
usage: vigil-bench router [OPTIONS]

Measures `vigil router` against libzmq's zmq_proxy (ROUTER -> PUSH), both
started as child processes on 127.0.0.1 with ephemeral ports, then prints a
table and, as the last line of stdout, one JSON object.

options:
  --clients LIST            client counts of the throughput runs [default: 1,100,1000]
  --flood-clients LIST      client counts of the flood runs, whose clients never
                            back off nor read replies; 0 skips [default: 100]
  --sinks N                 PULL sinks per run [default: 2]
  --seconds S               timed length of each throughput run [default: 5]
  --size BYTES              size of each stats message [default: 200]
  --latency-requests N      back-end deliveries to time under load, after up to
                            200 with the router idle; 0 skips [default: 2000]
  --latency-clients N       clients streaming meanwhile [default: 100]
  --latency-rate R          then the same again with the clients sending R msg/s
                            in all, a loaded but not saturated router; 0 skips
                            [default: 100000]
  --scale-clients N         idle clients for the memory run, 0 skips [default: 10000]
  --curve-clients LIST      client counts of the encrypted runs: the router and
                            zmq_proxy both with CURVE, beside the plaintext run of
                            the same count; 0 skips [default: 100]
  --pin-target CORE         run the router and the proxy on CORE alone and the
                            load generator on the other cores [default: share all]
  -h, --help                show this text

VIGIL_* variables in the environment reach the router (e.g. VIGIL_IO_THREADS=2);
the proxy follows VIGIL_IO_THREADS, VIGIL_CLIENT_HWM and VIGIL_SINK_HWM too.
Bind addresses are always 127.0.0.1 with ephemeral ports.
";

/// Each load client costs this process a TCP descriptor and a mailbox
/// eventfd; with the usual 20000-descriptor limit this leaves headroom.
pub const MAX_LOAD_CLIENTS: usize = 8000;

/// What a command line asked for.
#[derive(Debug, PartialEq)]
pub enum Parsed<T> {
    Help,
    Run(T),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouterOptions {
    pub clients: Vec<usize>,
    /// Client counts of the flood runs (clients that never back off).
    pub flood_clients: Vec<usize>,
    /// Client counts of the CURVE runs.
    pub curve_clients: Vec<usize>,
    /// The core the forwarding processes are pinned to, if any.
    pub pin_target: Option<usize>,
    pub sinks: usize,
    pub seconds: Duration,
    pub size: usize,
    pub latency_requests: usize,
    pub latency_clients: usize,
    /// The paced stream of the second latency run, msg/s; 0 skips it.
    pub latency_rate: u64,
    pub scale_clients: usize,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            clients: vec![1, 100, 1000],
            flood_clients: vec![100],
            curve_clients: vec![100],
            pin_target: None,
            sinks: 2,
            seconds: Duration::from_secs(5),
            size: 200,
            latency_requests: 2000,
            latency_clients: 100,
            latency_rate: 100_000,
            scale_clients: 10_000,
        }
    }
}

/// `vigil-bench proxy --client-bind EP --sink-bind EP`
#[derive(Debug, PartialEq)]
pub struct ProxyOptions {
    pub client_bind: String,
    pub sink_bind: String,
    /// Serve CURVE on both sockets with this secret key file.
    pub curve_key: Option<String>,
}

/// `vigil-bench clients --connect EP --count N`
#[derive(Debug, PartialEq)]
pub struct ClientsOptions {
    pub connect: String,
    pub count: usize,
}

pub fn parse_router(args: &[String]) -> Result<Parsed<RouterOptions>, BenchError> {
    let Some(pairs) = flag_pairs(args)? else {
        return Ok(Parsed::Help);
    };
    let mut o = RouterOptions::default();
    for (flag, value) in pairs {
        match flag {
            "--clients" => o.clients = list(flag, value, 1, MAX_LOAD_CLIENTS)?,
            "--flood-clients" => {
                o.flood_clients = list(flag, value, 0, MAX_LOAD_CLIENTS)?;
                o.flood_clients.retain(|&n| n > 0);
            }
            "--curve-clients" => {
                o.curve_clients = list(flag, value, 0, MAX_LOAD_CLIENTS)?;
                o.curve_clients.retain(|&n| n > 0);
            }
            "--pin-target" => o.pin_target = Some(number(flag, value, 0, 1023)?),
            "--sinks" => o.sinks = number(flag, value, 1, 64)?,
            "--seconds" => o.seconds = seconds(flag, value)?,
            "--size" => o.size = number(flag, value, 1, 1 << 20)?,
            "--latency-requests" => o.latency_requests = number(flag, value, 0, 1_000_000)?,
            "--latency-clients" => o.latency_clients = number(flag, value, 1, MAX_LOAD_CLIENTS)?,
            "--latency-rate" => o.latency_rate = number(flag, value, 0, 100_000_000)? as u64,
            "--scale-clients" => o.scale_clients = number(flag, value, 0, 100_000)?,
            other => return Err(unknown(other)),
        }
    }
    Ok(Parsed::Run(o))
}

pub fn parse_proxy(args: &[String]) -> Result<Parsed<ProxyOptions>, BenchError> {
    let Some(pairs) = flag_pairs(args)? else {
        return Ok(Parsed::Help);
    };
    let (mut client_bind, mut sink_bind, mut curve_key) = (None, None, None);
    for (flag, value) in pairs {
        match flag {
            "--curve-key" => curve_key = Some(value.to_string()),
            "--client-bind" => client_bind = Some(value.to_string()),
            "--sink-bind" => sink_bind = Some(value.to_string()),
            other => return Err(unknown(other)),
        }
    }
    Ok(Parsed::Run(ProxyOptions {
        client_bind: required("--client-bind", client_bind)?,
        sink_bind: required("--sink-bind", sink_bind)?,
        curve_key,
    }))
}

pub fn parse_clients(args: &[String]) -> Result<Parsed<ClientsOptions>, BenchError> {
    let Some(pairs) = flag_pairs(args)? else {
        return Ok(Parsed::Help);
    };
    let (mut connect, mut count) = (None, None);
    for (flag, value) in pairs {
        match flag {
            "--connect" => connect = Some(value.to_string()),
            "--count" => count = Some(number(flag, value, 1, MAX_LOAD_CLIENTS)?),
            other => return Err(unknown(other)),
        }
    }
    Ok(Parsed::Run(ClientsOptions {
        connect: required("--connect", connect)?,
        count: required("--count", count)?,
    }))
}

/// A positive integer from the environment, the default when unset or
/// empty (as the router reads its VIGIL_* variables).
pub fn env_positive(name: &str, default: i32) -> Result<i32, BenchError> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => match text.trim().parse::<i32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(BenchError::usage(format!(
                "{name}={text:?}: not a positive integer"
            ))),
        },
        _ => Ok(default),
    }
}

/// Splits `--flag value` and `--flag=value` into pairs; `None` when help
/// was asked for.
fn flag_pairs(args: &[String]) -> Result<Option<Vec<(&str, &str)>>, BenchError> {
    let mut pairs = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if !arg.starts_with("--") {
            return Err(BenchError::usage(format!("unexpected argument {arg:?}")));
        }
        let pair = match arg.split_once('=') {
            Some((flag, value)) => (flag, value),
            None => match rest.next() {
                Some(value) => (arg.as_str(), value.as_str()),
                None => return Err(BenchError::usage(format!("{arg} needs a value"))),
            },
        };
        pairs.push(pair);
    }
    Ok(Some(pairs))
}

fn number(flag: &str, value: &str, min: usize, max: usize) -> Result<usize, BenchError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(BenchError::usage(format!(
            "{flag} {value:?}: expected a whole number from {min} to {max}"
        ))),
    }
}

fn list(flag: &str, value: &str, min: usize, max: usize) -> Result<Vec<usize>, BenchError> {
    value
        .split(',')
        .map(|item| number(flag, item, min, max))
        .collect()
}

fn seconds(flag: &str, value: &str) -> Result<Duration, BenchError> {
    match value.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(BenchError::usage(format!(
            "{flag} {value:?}: expected seconds, more than 0 and at most 3600"
        ))),
    }
}

fn required<T>(flag: &str, value: Option<T>) -> Result<T, BenchError> {
    value.ok_or_else(|| BenchError::usage(format!("{flag} is required")))
}

fn unknown(flag: &str) -> BenchError {
    BenchError::usage(format!("unknown option {flag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn defaults_without_arguments() {
        let parsed = parse_router(&[]).unwrap();
        assert_eq!(parsed, Parsed::Run(RouterOptions::default()));
    }

    #[test]
    fn both_flag_forms_are_read() {
        let args =
            words("--clients=1,10 --seconds 0.5 --scale-clients 0 --sinks=3 --latency-rate 5000");
        let Parsed::Run(o) = parse_router(&args).unwrap() else {
            panic!("expected options")
        };
        assert_eq!(o.clients, vec![1, 10]);
        assert_eq!(o.seconds, Duration::from_millis(500));
        assert_eq!(o.scale_clients, 0);
        assert_eq!(o.sinks, 3);
        assert_eq!(o.latency_rate, 5000);
    }

    #[test]
    fn help_wins_over_other_flags() {
        assert_eq!(
            parse_router(&words("--seconds 3 --help")).unwrap(),
            Parsed::Help
        );
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for bad in [
            "--clients 0",
            "--clients 1,,2",
            "--seconds -1",
            "--seconds",
            "--bogus 1",
            "stray",
            "--sinks 0",
            "--latency-rate -1",
        ] {
            let err = parse_router(&words(bad)).unwrap_err();
            assert!(err.is_usage(), "{bad}: {err}");
        }
    }

    #[test]
    fn helpers_need_their_endpoints() {
        assert!(parse_proxy(&words("--client-bind tcp://x:1"))
            .unwrap_err()
            .is_usage());
        let parsed = parse_clients(&words("--connect tcp://h:1 --count 5")).unwrap();
        let expected = ClientsOptions {
            connect: "tcp://h:1".into(),
            count: 5,
        };
        assert_eq!(parsed, Parsed::Run(expected));
    }
}
