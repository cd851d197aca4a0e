//! `vigil scheduler`: runs declared plugins where they are declared (being built; see the open issue).

use crate::error::Error;

pub fn command(_args: &[String]) -> Result<(), Error> {
    Err(Error::Usage("vigil scheduler is not built yet".into()))
}
