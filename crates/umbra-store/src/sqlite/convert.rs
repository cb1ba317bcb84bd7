//! Blobs back into fixed-size arrays; a wrong length means a corrupt file.

use rusqlite::Row;

use crate::StoreError;

/// Column `idx` of `row` as an `N`-byte array.
pub fn fixed<const N: usize>(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; N]> {
    let blob: Vec<u8> = row.get(idx)?;
    blob.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Blob,
            Box::new(StoreError::Corrupt("stored key or id has the wrong length")),
        )
    })
}

/// A non-negative SQLite integer as `u64`.
pub fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
