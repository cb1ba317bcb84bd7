//! `umbra devices` (list, link, unlink this account's devices) and
//! `umbra link` (join an account from a new machine).

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use umbra_client::devices::Joining;
use umbra_wire::proxy::ProxyLink;

use crate::output::Output;

/// This account's devices.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Link a new device: shows a code (and its QR code) to give the new
    /// machine (`umbra link CODE` there), then asks you to confirm the
    /// fingerprint both devices show, and adds the device to every
    /// conversation. Only the device that created the account can link.
    Link {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// The fingerprint the new device shows, given in advance (without
        /// it you are asked to type it when the device asks).
        #[arg(long, value_name = "FINGERPRINT")]
        confirm: Option<String>,
    },
    /// Unlink the device ID (as `umbra devices` lists it, or its first
    /// characters): it is removed from every conversation and can no
    /// longer read anything sent after.
    Unlink {
        /// The device's id.
        id: String,
    },
}

/// `umbra devices [link|unlink]`.
pub async fn run(
    cmd: Option<DevicesCommand>,
    profile: &Path,
    proxy: &Option<ProxyLink>,
    fd: Option<i32>,
    out: Output,
) -> anyhow::Result<()> {
    let mut client = crate::commands::open(profile, proxy, fd)?;
    match cmd {
        None => {
            let devices = client.own_devices().await?;
            let text = devices
                .iter()
                .map(|d| {
                    let mut notes = Vec::new();
                    if d.primary {
                        notes.push("holds the account key");
                    }
                    if d.this {
                        notes.push("this device");
                    }
                    if notes.is_empty() {
                        d.id.clone()
                    } else {
                        format!("{}  ({})", d.id, notes.join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.value(&devices, &text);
        }
        Some(DevicesCommand::Link { timeout, confirm }) => {
            let offer = client.link_offer()?;
            if !out.json {
                tell!(
                    "On the new machine, run:\n  umbra link '{}'\n(or `umbra link {} --invite LINK`)\n{}\nWaiting for it...",
                    offer.link,
                    offer.code,
                    umbra_proxy::link::qr(&offer.link)
                );
            }
            let ask = client
                .link_wait(&offer, Duration::from_secs(timeout))
                .await?;
            let approved = match &confirm {
                Some(fp) => same_fingerprint(fp, &ask.fingerprint),
                None => ask_user(&ask.fingerprint)?,
            };
            if !approved {
                anyhow::bail!(umbra_client::ClientError::Invalid(format!(
                    "not linked: the new device showed {}, which was not confirmed",
                    ask.fingerprint
                )));
            }
            let linked = client.link_approve(&offer, &ask).await?;
            let id = linked.id.clone();
            // Conversations waiting to be received are the new device's too.
            let events = client.sync().await?;
            out.events(&events);
            if !out.json {
                tell!("Linked {id}; adding it to your conversations...");
            }
            let added = client
                .add_device_everywhere(&linked.identity_key, Duration::from_secs(timeout))
                .await?;
            out.value(
                &serde_json::json!({ "linked": id, "conversations": added }),
                &format!("linked {id}; it is in {added} conversation(s)"),
            );
        }
        Some(DevicesCommand::Unlink { id }) => {
            let gone = client.unlink_device(&id).await?;
            out.value(
                &serde_json::json!({ "unlinked": gone }),
                &format!("unlinked {gone}: it can no longer read what is sent"),
            );
        }
    }
    Ok(())
}

/// `umbra link`: this machine joins the account whose device showed the
/// link.
pub async fn join(
    link: &str,
    invite: Option<&str>,
    timeout: u64,
    profile: &Path,
    proxy: Option<ProxyLink>,
    passphrase: Option<&str>,
    out: Output,
) -> anyhow::Result<()> {
    let joining = Joining::start(link, invite, proxy)?;
    if !out.json {
        tell!(
            "This device's fingerprint: {}\nConfirm it on your other device...",
            joining.fingerprint()
        );
    }
    let client = joining
        .finish(profile, passphrase, Duration::from_secs(timeout))
        .await?;
    let text = format!(
        "this device is now `{}`'s on {}; your conversations arrive with `umbra sync`",
        client.username(),
        client.invite().address()
    );
    crate::commands::account_made(&client, profile, &text, out);
    Ok(())
}

fn same_fingerprint(given: &str, shown: &str) -> bool {
    let clean = |s: &str| {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    clean(given) == clean(shown)
}

/// Asks the user to type the fingerprint the new device shows (on a
/// terminal, or a line on standard input from a script); links only if it
/// is the one this device received.
fn ask_user(fingerprint: &str) -> anyhow::Result<bool> {
    tell!(
        "A device asks to be linked. Type the fingerprint it shows to link it \
         (anything else refuses):"
    );
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(same_fingerprint(answer.trim(), fingerprint) && !answer.trim().is_empty())
}
