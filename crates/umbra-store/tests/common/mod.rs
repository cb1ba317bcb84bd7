//! What the store tests share: a device to register, and its account's
//! first device list.

use umbra_store::{AccountDevices, NewDevice};

/// Device `n` of `name`, every id and key derived from `n`.
pub fn device(name: &str, n: u8) -> NewDevice {
    NewDevice {
        username: name.to_string(),
        device_id: [n; 16],
        mailbox_id: [n.wrapping_add(100); 16],
        identity_key: [n; 32],
        sealing_key: [n.wrapping_add(1); 32],
        delivery_token_hash: [n.wrapping_add(2); 32],
    }
}

/// The first device list of the account whose first device is `n`
/// (opaque to the store).
pub fn list(n: u8) -> AccountDevices {
    AccountDevices {
        account_key: [n.wrapping_add(50); 32],
        version: 1,
        list: vec![n],
    }
}
