//! Plugin declarations: which commands this agent may run, and how.
//!
//! Declarations come from files in `VIGIL_PLUGIN_DIR` (the operator's) and
//! from local processes' registrations (over the local intake socket). A
//! `run_plugin` from the network only ever names a declared plugin: the
//! network never supplies a command.
//!
//! File format, one plugin per `*.conf` file, `key = value` lines, `#`
//! comments:
//!
//! ```text
//! name = load
//! command = /usr/lib/vigil/plugins/check_load -w 4 -c 8
//! interval_s = 60      # optional: how often the scheduler should run it
//! timeout_s = 10       # optional, default 10
//! local = true         # optional: also run it here every interval_s
//! ```
//!
//! The command is run by `/bin/sh -c`, as Nagios does, so quoting works.
//!
//! A local process declares plugins by name: its entry has no `command`
//! (an empty one here), and runs the plugin directory's command of that
//! name at the interval and timeout the process gave. Only with
//! `VIGIL_AGENT_LOCAL_COMMANDS=1` may it bring its own command.

use crate::protocol::PluginDecl;
use serde_json::Value;
use std::path::Path;

pub const DEFAULT_TIMEOUT_S: f64 = 10.0;
const MAX_TIMEOUT_S: f64 = 3_600.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    pub name: String,
    /// Empty for a local declaration by name (the directory's command).
    pub command: String,
    pub interval_s: Option<f64>,
    pub timeout_s: f64,
    /// Run on `interval_s` by the agent itself.
    pub local: bool,
    /// Who declared it: `vigil-agent` for files, else the process name.
    pub process: String,
}

impl Declaration {
    /// The entry in a registration's `plugins` list (no `command` for a
    /// declaration by name).
    pub fn to_decl(&self) -> PluginDecl {
        PluginDecl {
            name: self.name.clone(),
            command: (!self.by_name()).then(|| self.command.clone()),
            interval_s: self.interval_s,
            timeout_s: self.timeout_s,
        }
    }

    /// A local declaration naming a plugin of the directory.
    pub fn by_name(&self) -> bool {
        self.command.is_empty()
    }
}

/// A plugin name: 1-128 characters of letters, digits, `_ - . :`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

fn check(decl: Declaration, needs_command: bool) -> Result<Declaration, String> {
    if !valid_name(&decl.name) {
        return Err(format!(
            "plugin name {:?} must be 1-128 letters, digits, _ - . :",
            decl.name
        ));
    }
    let by_name = !needs_command && decl.command.is_empty();
    if !by_name && (decl.command.trim().is_empty() || decl.command.len() > 4096) {
        return Err(format!(
            "plugin {}: command must be 1-4096 characters",
            decl.name
        ));
    }
    if !(decl.timeout_s > 0.0 && decl.timeout_s <= MAX_TIMEOUT_S) {
        return Err(format!(
            "plugin {}: timeout_s must be in (0, 3600]",
            decl.name
        ));
    }
    if let Some(i) = decl.interval_s {
        if !(1.0..=86_400.0).contains(&i) {
            return Err(format!(
                "plugin {}: interval_s must be 1 to 86400",
                decl.name
            ));
        }
    }
    if decl.local && decl.interval_s.is_none() {
        return Err(format!(
            "plugin {}: local = true needs interval_s",
            decl.name
        ));
    }
    Ok(decl)
}

/// Parses one declaration file's text.
pub fn parse_file(text: &str) -> Result<Declaration, String> {
    let mut decl = Declaration {
        name: String::new(),
        command: String::new(),
        interval_s: None,
        timeout_s: DEFAULT_TIMEOUT_S,
        local: false,
        process: "vigil-agent".into(),
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected key = value", n + 1))?;
        let (key, value) = (key.trim(), value.trim());
        let number = |v: &str| {
            v.split('#')
                .next()
                .unwrap_or("")
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("line {}: {key} must be a number", n + 1))
        };
        match key {
            "name" => decl.name = value.to_string(),
            "command" => decl.command = value.to_string(),
            "interval_s" => decl.interval_s = Some(number(value)?),
            "timeout_s" => decl.timeout_s = number(value)?,
            "local" => {
                decl.local = match value.split('#').next().unwrap_or("").trim() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => return Err(format!("line {}: local must be true or false", n + 1)),
                }
            }
            other => return Err(format!("line {}: unknown key {other:?}", n + 1)),
        }
    }
    check(decl, true)
}

/// Reads every `*.conf` in `dir`, sorted by file name. A missing directory
/// declares nothing; a bad file is reported and skipped, the rest still
/// count. A name declared twice keeps the first.
pub fn read_dir(dir: &Path) -> (Vec<Declaration>, Vec<String>) {
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), errors),
        Err(e) => {
            errors.push(format!("{}: {e}", dir.display()));
            return (Vec::new(), errors);
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    paths.sort();
    let mut decls: Vec<Declaration> = Vec::new();
    for path in paths {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_file(&text));
        match parsed {
            Ok(d) if decls.iter().any(|x| x.name == d.name) => errors.push(format!(
                "{}: plugin {} is already declared; ignored",
                path.display(),
                d.name
            )),
            Ok(d) => decls.push(d),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    (decls, errors)
}

/// One entry of a local registration's `plugins` list; without `command`
/// it declares the directory's plugin of that name.
pub fn from_json(value: &Value, process: &str) -> Result<Declaration, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| "each plugin must be an object".to_string())?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let num = |k: &str| obj.get(k).and_then(Value::as_f64);
    let command = match obj.get("command") {
        None => String::new(),
        Some(Value::String(c)) if !c.trim().is_empty() => c.clone(),
        Some(_) => return Err("command must be a non-empty string".into()),
    };
    check(
        Declaration {
            name: text("name").unwrap_or_default(),
            command,
            interval_s: num("interval_s"),
            timeout_s: num("timeout_s").unwrap_or(DEFAULT_TIMEOUT_S),
            local: obj.get("local").and_then(Value::as_bool).unwrap_or(false),
            process: process.to_string(),
        },
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_file() {
        let d = parse_file(
            "# load\nname = load\ncommand = /x/check_load -w 4 -c 'a b'\n\
             interval_s = 60 # a minute\ntimeout_s=5\nlocal = yes\n",
        )
        .unwrap();
        assert_eq!(d.name, "load");
        assert_eq!(d.command, "/x/check_load -w 4 -c 'a b'");
        assert_eq!(
            (d.interval_s, d.timeout_s, d.local),
            (Some(60.0), 5.0, true)
        );
    }

    #[test]
    fn refuses_bad_files() {
        assert!(parse_file("command = x").is_err());
        assert!(parse_file("name = a b\ncommand = x").is_err());
        assert!(parse_file("name = a\n").is_err());
        assert!(parse_file("name = a\ncommand = x\ntimeout_s = 0").is_err());
        assert!(parse_file("name = a\ncommand = x\nlocal = true").is_err());
        assert!(parse_file("name = a\ncommand = x\ncolour = red").is_err());
        assert!(parse_file("name = a\ncommand = x\nnonsense").is_err());
    }

    #[test]
    fn the_shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/plugins.d");
        let (decls, errors) = read_dir(&dir);
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<_> = decls.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["disk_root", "load", "true"]);
        assert!(decls[0].local);
    }

    #[test]
    fn from_registration_json() {
        let v = json!({"name": "q", "command": "/bin/true", "interval_s": 30});
        let d = from_json(&v, "app").unwrap();
        assert_eq!(
            (d.process.as_str(), d.timeout_s),
            ("app", DEFAULT_TIMEOUT_S)
        );
        let by_name = from_json(&json!({"name": "q"}), "app").unwrap();
        assert!(by_name.by_name());
        assert!(by_name.to_decl().command.is_none());
        assert!(from_json(&json!({"name": "q", "command": ""}), "app").is_err());
        assert!(from_json(&json!({"command": "/bin/true"}), "app").is_err());
        assert!(from_json(&json!(3), "app").is_err());
    }
}
