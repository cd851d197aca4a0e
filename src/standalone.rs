//! `vigil standalone`: router, sinks, scheduler and agent in one command (being built; see the open issue).

use crate::error::Error;

pub fn command(_args: &[String]) -> Result<(), Error> {
    Err(Error::Usage("vigil standalone is not built yet".into()))
}
