//! `vigil send`: hands one message to the local agent (being built; see the open issue).

use crate::error::Error;

pub fn command(_args: &[String]) -> Result<(), Error> {
    Err(Error::Usage("vigil send is not built yet".into()))
}
