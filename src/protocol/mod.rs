//! The wire contract of `docs/PROTOCOL.md`, one module for every part: the
//! agent, the router, the sinks, the scheduler, `vigil status`, `vigil
//! send` and the back-end client read and write messages only through it.
//!
//! - [`codes`]: every error and refusal code, plugin states and severities,
//!   each an enum whose text is the wire text;
//! - [`messages`]: the messages clients send (with their envelope), and
//!   what the router and the back end send to clients;
//! - [`envelope`]: reading an untrusted client message field by field (the
//!   sinks), and the router's metadata frame;
//! - [`backend`]: the router's back-end replies (`{"ok":…}`);
//! - [`local`]: the agent's local intake replies;
//! - [`validate`]: the router's zero-allocation validation of a client
//!   frame (one pass of `json_scan`), and back-end request parsing.
//!
//! Nothing here touches a socket; the unit tests pin the exact JSON text
//! other implementations rely on.

pub mod backend;
pub mod codes;
pub mod envelope;
pub mod local;
pub mod messages;
pub mod validate;

pub use backend::{
    bad_request_frame, Delivery, Reply, RouterStatus, StatusCounters, STATUS_REQUEST,
};
pub use codes::{BackendError, LocalCode, PluginState, RejectCode, Severity};
pub use envelope::{clip, Envelope, Malformed, Metadata};
pub use local::LocalReply;
pub use messages::{
    sorted_frame, ClientMessage, Framed, Heartbeat, Hello, Notification, Perfdata, PluginDecl,
    PluginResult, Process, Registration, Stats, ToClient, HELLO,
};
pub use validate::{
    parse_backend_request, parse_uuid, string_id, uuid_text, validate, validate_as, welcome_frame,
    Accepted, BackendRequest, BadRequest, MetadataWriter, Rejection, Target,
};
