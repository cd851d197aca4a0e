//! `vigil status`: the state of the fleet, for an operator (being built; see the open issue).

use crate::error::Error;

pub fn command(_args: &[String]) -> Result<(), Error> {
    Err(Error::Usage("vigil status is not built yet".into()))
}
