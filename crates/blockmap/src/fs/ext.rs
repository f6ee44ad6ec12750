//! Placeholder: recognises nothing yet.

use crate::fs::FsKind;
use crate::{ExtentSet, MetaError, Region};

pub fn probe(_region: &Region) -> Result<Option<FsKind>, MetaError> {
    Ok(None)
}

pub fn used(_region: &Region) -> Result<ExtentSet, MetaError> {
    Err(MetaError::Unsupported("ext is not read yet".into()))
}
