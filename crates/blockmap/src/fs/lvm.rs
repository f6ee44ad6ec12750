//! Placeholder: recognises nothing yet. (An LVM2 physical volume is always sent whole.)

use crate::fs::FsKind;
use crate::{MetaError, Region};

pub fn probe(_region: &Region) -> Result<Option<FsKind>, MetaError> {
    Ok(None)
}
