//! The command notification handler (being built).

use super::config::CommandConfig;
use std::time::Duration;

/// Runs the command handler for one notification.
pub fn run(
    _config: &CommandConfig,
    _notification: &serde_json::Value,
    _timeout: Duration,
) -> Result<(), String> {
    Err("the command handler is not built yet".into())
}
