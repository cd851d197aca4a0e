//! `vigil agent`: the daemon on every monitored host (being built; see the open issue).

use crate::error::Error;

pub fn command(_args: &[String]) -> Result<(), Error> {
    Err(Error::Usage("vigil agent is not built yet".into()))
}
