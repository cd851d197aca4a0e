//! The registration sink: clients, their processes and declared plugins.
//!
//! A registration replaces that (client, `process.name`)'s plugin set. Each
//! plugin entry is checked (a name, a command unless it is declared by
//! name from the agent's plugin directory, `timeout_s` above 0,
//! `interval_s` above 0 or absent, a name not repeated); a bad entry is refused alone, counted and
//! logged, and the good ones are stored, so one typo in an agent's
//! configuration does not unschedule all its other checks.

use super::config::SinkType;
use super::message::{opt_num, opt_str, Incoming, Malformed};
use super::worker::{Effects, Failure, TypeSink};
use crate::rate_limit::RateLimit;
use crate::store::plugins::{self, Plugin, Process};
use crate::store::Tx;
use serde_json::{Map, Value};
use std::time::Duration;

pub struct RegistrationSink {
    pub log: RateLimit,
    /// This batch's registrations, stored together in [`TypeSink::flush`].
    pub pending: Vec<(String, Process, Vec<Plugin>, f64)>,
}

impl Default for RegistrationSink {
    fn default() -> RegistrationSink {
        RegistrationSink {
            log: RateLimit::new(Duration::from_secs(10)),
            pending: Vec::new(),
        }
    }
}

impl TypeSink for RegistrationSink {
    fn kind(&self) -> SinkType {
        SinkType::Registration
    }

    fn handle(&mut self, _: &Tx, msg: &Incoming, out: &mut Effects) -> Result<(), Failure> {
        let process = process(msg)?;
        let (accepted, refused) = plugin_list(msg.body.get("plugins"))?;
        for why in &refused {
            self.log.warn(format_args!(
                "registration: {} process {:?}: plugin entry refused: {why}",
                msg.uuid, process.name
            ));
        }
        out.rejected += refused.len();
        self.pending
            .push((msg.uuid.clone(), process, accepted, msg.meta.received_at));
        Ok(())
    }

    /// The batch's registrations: the plugin sets of their clients read
    /// once, each registration applied in order in memory (exactly what
    /// storing them one by one would do, takeovers included), and the
    /// difference written, with each process's last registration.
    fn flush(&mut self, tx: &Tx, _out: &mut Effects) -> Result<(), Failure> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let mut uuids: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
        uuids.sort_unstable();
        uuids.dedup();
        let before = plugins::load_many(tx, &uuids)?;
        let mut after = before.clone();
        let mut processes: std::collections::BTreeMap<(&str, &str), (&Process, f64)> =
            std::collections::BTreeMap::new();
        for (uuid, process, accepted, at) in &pending {
            let set = after.entry(uuid.clone()).or_default();
            plugins::apply(set, &process.name, accepted, *at);
            processes.insert((uuid, &process.name), (process, *at));
        }
        let rows: Vec<(&str, &Process, f64)> = processes
            .iter()
            .map(|((uuid, _), (p, at))| (*uuid, *p, *at))
            .collect();
        plugins::store_processes(tx, &rows)?;
        plugins::store_sets(tx, &before, &after)?;
        Ok(())
    }

    fn discard(&mut self) {
        self.pending.clear();
    }
}

/// `process`: an object with a non-empty `name`, optional `pid` and `version`.
fn process(msg: &Incoming) -> Result<Process, Malformed> {
    let Some(Value::Object(p)) = msg.body.get("process") else {
        return Err(Malformed("process is missing or not an object".into()));
    };
    let name = opt_str(p, "name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Malformed("process.name is missing or empty".into()))?;
    let pid = match p.get("pid") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| Malformed("process.pid is not an integer".into()))?,
        ),
    };
    let version = opt_str(p, "version")?.map(str::to_string);
    Ok(Process {
        name: name.to_string(),
        pid,
        version,
    })
}

/// The valid plugin entries, and why each other one was refused.
fn plugin_list(raw: Option<&Value>) -> Result<(Vec<Plugin>, Vec<String>), Malformed> {
    let entries = match raw {
        None | Some(Value::Null) => return Ok((vec![], vec![])),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(Malformed("plugins is not an array".into())),
    };
    let (mut accepted, mut refused) = (Vec::<Plugin>::new(), Vec::new());
    for (i, entry) in entries.iter().enumerate() {
        let checked = match entry {
            Value::Object(obj) => plugin(obj),
            _ => Err(Malformed("not an object".into())),
        };
        match checked {
            Ok(p) if accepted.iter().any(|a| a.name == p.name) => {
                refused.push(format!("#{i}: plugin {:?} declared twice", p.name))
            }
            Ok(p) => accepted.push(p),
            Err(why) => refused.push(format!("#{i}: {why}")),
        }
    }
    Ok((accepted, refused))
}

fn plugin(obj: &Map<String, Value>) -> Result<Plugin, Malformed> {
    let text = |field: &str| -> Result<String, Malformed> {
        opt_str(obj, field)?
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| Malformed(format!("{field} is missing or empty")))
    };
    let seconds = |field: &str| -> Result<f64, Malformed> {
        opt_num(obj, field)?
            .filter(|s| *s > 0.0)
            .ok_or_else(|| Malformed(format!("{field} must be a number above 0")))
    };
    // No interval (absent or null) declares a plugin that runs only on
    // request: the scheduler leaves it alone.
    let interval_s = match opt_num(obj, "interval_s")? {
        None => None,
        Some(_) => Some(seconds("interval_s")?),
    };
    Ok(Plugin {
        name: text("name")?,
        // Absent: declared by name; the agent's plugin directory has it.
        command: match opt_str(obj, "command")? {
            None => String::new(),
            Some(_) => text("command")?,
        },
        interval_s,
        timeout_s: seconds("timeout_s")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::message::tests::{incoming, U};
    use serde_json::json;

    #[test]
    fn bad_entries_are_refused_alone() {
        let list = json!([
            {"name":"load","command":"check_load","interval_s":60,"timeout_s":10},
            {"name":"disk","command":"","interval_s":60,"timeout_s":10},
            {"name":"mem","command":"check_mem","interval_s":0,"timeout_s":10},
            {"name":"load","command":"other","interval_s":5,"timeout_s":1},
            "swap",
            {"name":"ntp","command":"check_ntp","interval_s":300,"timeout_s":"10"},
        ]);
        let (ok, refused) = plugin_list(Some(&list)).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].command, "check_load");
        assert_eq!(refused.len(), 5, "{refused:?}");
        assert!(refused[0].contains("command"), "{refused:?}");
        assert!(refused[2].contains("twice"), "{refused:?}");
        assert!(plugin_list(Some(&json!({}))).is_err());
        assert_eq!(plugin_list(None).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn process_name_is_required() {
        let reg = |process: &str| {
            incoming(
                SinkType::Registration,
                &format!(r#"{{"uuid":"{U}","type":"registration","process":{process}}}"#),
            )
        };
        assert!(process(&reg(r#"{"pid":3}"#)).is_err());
        assert!(process(&reg(r#""agent""#)).is_err());
        assert!(process(&reg(r#"{"name":"a","pid":"3"}"#)).is_err());
        let p = process(&reg(r#"{"name":"vigil-agent","pid":3,"version":"0.1"}"#)).unwrap();
        assert_eq!((p.name.as_str(), p.pid), ("vigil-agent", Some(3)));
    }
}
