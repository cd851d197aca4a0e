//! What `vigil status` shows, gathered once: the store's clients, plugin
//! states and recent notifications, and each router's `status` reply.
//!
//! The store is opened read-only (status never writes, and never creates a
//! store where there was none); a PostgreSQL store that cannot be reached
//! within its connect timeout is reported as unreachable. Liveness is
//! computed with the scheduler's rule, so "up" here means "schedulable"
//! there. On PostgreSQL every host sees the same fleet.

use crate::backend_client::BackendClient;
use crate::protocol::{PluginState, Reply, STATUS_REQUEST};
use crate::store::{Result, Store, Target, Tx};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub generated_at: f64,
    pub db: String,
    pub clients: Vec<ClientRow>,
    pub plugins: Vec<PluginRow>,
    pub notifications: Vec<NotificationRow>,
    pub routers: Vec<RouterRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    pub uuid: String,
    pub hostname: Option<String>,
    /// "up", "down", or "unknown" (no heartbeat yet).
    pub state: String,
    pub last_seen: f64,
    pub last_heartbeat: Option<f64>,
    pub heartbeat_interval_s: Option<f64>,
    pub last_router: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginRow {
    pub uuid: String,
    pub hostname: Option<String>,
    pub plugin: String,
    /// 0-3, None while no result has arrived.
    pub status: Option<i64>,
    /// OK, WARNING, CRITICAL, UNKNOWN, or PENDING (declared, no result yet).
    pub state: String,
    pub output: Option<String>,
    /// When the last result arrived.
    pub ts: Option<f64>,
    /// When the status last changed.
    pub changed_at: Option<f64>,
    pub interval_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotificationRow {
    pub seq: i64,
    pub created_at: f64,
    pub uuid: Option<String>,
    pub hostname: Option<String>,
    pub origin: String,
    pub severity: String,
    pub source: Option<String>,
    pub message: Option<String>,
    pub state: String,
    pub attempts: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouterRow {
    pub endpoint: String,
    pub reachable: bool,
    /// The router's `{"op":"status"}` reply.
    pub status: Option<Value>,
    pub error: Option<String>,
}

/// The name of a Nagios status code.
pub fn state_name(status: Option<i64>) -> &'static str {
    match status {
        None => "PENDING",
        Some(code) => PluginState::from_code(code)
            .unwrap_or(PluginState::Unknown)
            .name(),
    }
}

/// Opens the store for reading; a missing file is an error, not a new
/// store, and an unreachable server says so.
pub fn open_store(target: &Target) -> std::result::Result<Store, String> {
    Store::open_existing(target).map_err(|e| e.to_string())
}

/// Reads clients, plugin states and the last `notifications` notifications.
pub fn read_store(
    store: &mut Store,
    now: f64,
    grace: f64,
    notifications: usize,
) -> Result<(Vec<ClientRow>, Vec<PluginRow>, Vec<NotificationRow>)> {
    read_tx(&store.read()?, now, grace, notifications)
}

/// The same, inside a read transaction the caller holds (`vigil web`
/// reads a whole request in one).
pub fn read_tx(
    tx: &Tx,
    now: f64,
    grace: f64,
    notifications: usize,
) -> Result<(Vec<ClientRow>, Vec<PluginRow>, Vec<NotificationRow>)> {
    Ok((
        clients(tx, now, grace)?,
        plugins(tx)?,
        crate::store::fleet::recent_notifications(tx, notifications)?,
    ))
}

fn clients(tx: &Tx, now: f64, grace: f64) -> Result<Vec<ClientRow>> {
    let rows = tx.query(
        "SELECT uuid, hostname, last_seen, last_heartbeat, heartbeat_interval_s, last_router
         FROM clients ORDER BY hostname NULLS FIRST, uuid",
        &[],
    )?;
    rows.iter()
        .map(|r| crate::store::fleet::client_row(r, now, grace))
        .collect()
}

/// Every result, and every declared plugin without a result yet.
fn plugins(tx: &Tx) -> Result<Vec<PluginRow>> {
    let rows = tx.query(
        "SELECT r.uuid, c.hostname, r.plugin, r.status, r.output, r.ts, r.changed_at, p.interval_s
         FROM results r
         LEFT JOIN clients c ON c.uuid = r.uuid
         LEFT JOIN plugins p ON p.uuid = r.uuid AND p.name = r.plugin
         UNION ALL
         SELECT p.uuid, c.hostname, p.name, NULL, NULL, NULL, NULL, p.interval_s
         FROM plugins p
         LEFT JOIN clients c ON c.uuid = p.uuid
         WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.uuid = p.uuid AND r.plugin = p.name)
         ORDER BY 2 NULLS FIRST, 1, 3",
        &[],
    )?;
    rows.iter().map(crate::store::fleet::plugin_row).collect()
}

/// Asks every router for its status; an unanswering one is "unreachable".
/// With `keys`, as a CURVE client authenticated by them.
pub fn routers(
    endpoints: &[String],
    timeout: Duration,
    keys: Option<crate::curve::ClientKeys>,
) -> Vec<RouterRow> {
    let ctx = zmq::Context::new();
    let mut client = BackendClient::new(&ctx, endpoints.to_vec(), timeout).with_keys(keys);
    (0..endpoints.len())
        .map(|index| {
            let endpoint = endpoints[index].clone();
            match client.request(index, STATUS_REQUEST) {
                Ok(reply) if Reply::from_value(&reply).is_ok_and(|r| r.ok) => RouterRow {
                    endpoint,
                    reachable: true,
                    status: Some(reply),
                    error: None,
                },
                Ok(reply) => RouterRow {
                    endpoint,
                    reachable: true,
                    error: Some(format!("unexpected reply {reply}")),
                    status: Some(reply),
                },
                Err(why) => RouterRow {
                    endpoint,
                    reachable: false,
                    status: None,
                    error: Some(why),
                },
            }
        })
        .collect()
}
