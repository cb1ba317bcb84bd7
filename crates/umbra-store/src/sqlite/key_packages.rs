//! MLS key packages, per ciphersuite: batched upload with a per-device,
//! per-suite cap; atomic claim of one suite for all of a user's devices.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::accounts::device_exists;
use super::convert::count;
use crate::StoreError;
use crate::model::DeviceId;

/// Regular packages of `suite` left for a device.
pub fn left(tx: &Connection, device: &DeviceId, suite: u16) -> Result<u32, StoreError> {
    let n: i64 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM key_packages \
             WHERE device_id = ?1 AND suite = ?2 AND last_resort = 0",
        )?
        .query_row(params![&device[..], suite], |r| r.get(0))?;
    Ok(u32::try_from(count(n)).unwrap_or(u32::MAX))
}

/// Adds `packages` of `suite`, replaces that suite's last-resort one if
/// given; with `replace`, withdraws every package of the suite the device
/// had first. All or nothing.
pub fn upload(
    tx: &mut Transaction<'_>,
    device: &DeviceId,
    suite: u16,
    packages: &[Vec<u8>],
    last_resort: Option<&[u8]>,
    replace: bool,
    cap: u32,
) -> Result<u32, StoreError> {
    let sp = tx.savepoint()?;
    if !device_exists(&sp, device)? {
        return Err(StoreError::UnknownDevice);
    }
    if replace {
        sp.prepare_cached("DELETE FROM key_packages WHERE device_id = ?1 AND suite = ?2")?
            .execute(params![&device[..], suite])?;
    }
    let have = left(&sp, device, suite)?;
    let total = u64::from(have) + packages.len() as u64;
    if total > u64::from(cap) {
        return Err(StoreError::TooManyKeyPackages { max: cap });
    }
    {
        let mut insert = sp.prepare_cached(
            "INSERT INTO key_packages (device_id, data, last_resort, suite) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for p in packages {
            insert.execute(params![&device[..], p, 0, suite])?;
        }
        if let Some(lr) = last_resort {
            sp.prepare_cached(
                "DELETE FROM key_packages WHERE device_id = ?1 AND suite = ?2 AND last_resort = 1",
            )?
            .execute(params![&device[..], suite])?;
            insert.execute(params![&device[..], lr, 1, suite])?;
        }
    }
    sp.commit()?;
    Ok(u32::try_from(total).unwrap_or(u32::MAX))
}

/// Takes one package of `suite` for `device`: a regular one (deleted) or
/// else the last-resort one (kept). Returns the package and whether it is
/// last-resort.
pub fn claim(
    tx: &Connection,
    device: &DeviceId,
    suite: u16,
) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
    let regular: Option<Vec<u8>> = tx
        .prepare_cached(
            "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages \
             WHERE device_id = ?1 AND suite = ?2 AND last_resort = 0 ORDER BY id LIMIT 1) \
             RETURNING data",
        )?
        .query_row(params![&device[..], suite], |r| r.get(0))
        .optional()?;
    if let Some(p) = regular {
        return Ok(Some((p, false)));
    }
    let lr: Option<Vec<u8>> = tx
        .prepare_cached(
            "SELECT data FROM key_packages \
             WHERE device_id = ?1 AND suite = ?2 AND last_resort = 1 LIMIT 1",
        )?
        .query_row(params![&device[..], suite], |r| r.get(0))
        .optional()?;
    Ok(lr.map(|p| (p, true)))
}
