//! This account's own devices: the account key (on the device that made
//! the account), this device's certificate, and the account's signed
//! device list as this device last saw it.

use prost::Message;
use rusqlite::Connection;
use umbra_crypto::{AccountKey, Identity};
use umbra_wire::devices;
use umbra_wire::e2e::DeviceCertificate;
use umbra_wire::proto::{DeviceKeys, DeviceList, SignedDeviceList};

use crate::ClientError;
use crate::profile::{get_setting, set_setting};

/// The account's device list as this device last saw it.
pub(crate) fn own_list(conn: &Connection) -> Result<Option<DeviceList>, ClientError> {
    let Some(bytes) = get_setting(conn, "device_list")? else {
        return Ok(None);
    };
    let signed = SignedDeviceList::decode(bytes.as_slice())
        .map_err(|_| ClientError::Protocol("corrupt device list in the profile".into()))?;
    Ok(DeviceList::decode(signed.list.as_slice()).ok())
}

/// How many devices the account has, as this device last saw.
pub(crate) fn own_device_count(conn: &Connection) -> Result<usize, ClientError> {
    Ok(own_list(conn)?.map(|l| l.devices.len()).unwrap_or(1))
}

/// The certificate `account` signs for the device `identity`.
pub(crate) fn certify(account: &AccountKey, identity: &Identity) -> Result<Vec<u8>, ClientError> {
    let cert = DeviceCertificate {
        username: identity.username().to_string(),
        identity_key: identity.identity_key(),
        sealing_key: identity.sealing_key().to_vec(),
        account_key: account.public(),
    };
    Ok(devices::certify(&cert, |m| account.sign(m))?)
}

/// `devices` at `version`, signed by `account`.
pub(crate) fn sign_list(
    account: &AccountKey,
    username: &str,
    version: u64,
    devices: Vec<DeviceKeys>,
) -> Result<SignedDeviceList, ClientError> {
    let list = DeviceList {
        username: username.to_string(),
        account_key: account.public(),
        version,
        devices,
    };
    Ok(devices::sign_list(&list, |m| account.sign(m))?)
}

/// Keeps what makes this device one of the account's: its certificate,
/// the account's public key and the latest list.
pub(crate) fn keep(
    conn: &Connection,
    account_key: &[u8],
    certificate: &[u8],
    list: &SignedDeviceList,
) -> Result<(), ClientError> {
    set_setting(conn, "account_key", account_key)?;
    set_setting(conn, "device_certificate", certificate)?;
    set_setting(conn, "device_list", &list.encode_to_vec())?;
    Ok(())
}
