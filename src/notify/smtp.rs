//! The smtp notification handler (being built).

use super::config::SmtpConfig;
use std::time::Duration;

/// Runs the smtp handler for one notification.
pub fn send(
    _config: &SmtpConfig,
    _notification: &serde_json::Value,
    _timeout: Duration,
) -> Result<(), String> {
    Err("the smtp handler is not built yet".into())
}
