//! Placeholder: finds no table yet.

use crate::table::Table;
use crate::{MetaError, ReadAt};

pub fn read(_disk: &dyn ReadAt) -> Result<Option<Table>, MetaError> {
    Ok(None)
}
