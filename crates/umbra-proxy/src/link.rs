//! The proxy's secret (created on first start, kept 0600 in the data
//! directory) and the link users open, shown with a QR code.

use std::path::Path;

use anyhow::Context;
use rand::RngCore;
use umbra_wire::invite::{decode_key, encode_key};
use umbra_wire::proxy::ProxyLink;

const SECRET_FILE: &str = "proxy.secret";

/// Loads the secret, creating it if absent.
pub fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !data_dir.exists() {
        crate::files::private_dir(data_dir)?;
    }
    let path = data_dir.join(SECRET_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return decode_key(text.trim()).with_context(|| format!("{} is damaged", path.display()));
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", encode_key(&secret))?;
    tracing::info!("created a new proxy secret");
    Ok(secret)
}

/// When this proxy first started: the time its secret was created.
pub fn created(data_dir: &Path) -> u64 {
    std::fs::metadata(data_dir.join(SECRET_FILE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(crate::shared::unix_now, |d| d.as_secs())
}

/// The link as text and as a terminal QR code.
pub fn show(link: &ProxyLink) -> String {
    let text = link.to_string();
    let qr = qr(&text);
    format!("{text}\n{qr}")
}

/// `text` as a QR code drawn with terminal block characters (empty if it
/// does not fit one).
pub fn qr(text: &str) -> String {
    qrcode::QrCode::new(text.as_bytes())
        .map(|code| {
            code.render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build()
        })
        .unwrap_or_default()
}
