//! `vigil sink`: the back-end sinks that PULL from every router (being built; see the open issue).

use crate::error::Error;

pub fn command(_args: &[String]) -> Result<(), Error> {
    Err(Error::Usage("vigil sink is not built yet".into()))
}
