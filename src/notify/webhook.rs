//! The webhook notification handler (being built).

use super::config::WebhookConfig;
use std::time::Duration;

/// Runs the webhook handler for one notification.
pub fn send(
    _config: &WebhookConfig,
    _notification: &serde_json::Value,
    _timeout: Duration,
) -> Result<(), String> {
    Err("the webhook handler is not built yet".into())
}
