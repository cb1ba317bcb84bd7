//! The client commands: each opens the profile, does one thing, prints it.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use umbra_client::Client;

use crate::Command;
use crate::output::Output;

/// `umbra group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with the given members.
    Create {
        /// The group's name (shown to every member).
        name: String,
        /// Usernames to add.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Add members to a group.
    Add {
        /// The group.
        name: String,
        /// Usernames to add.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Remove a member from a group.
    Remove {
        /// The group.
        name: String,
        /// Username to remove.
        member: String,
    },
    /// Leave a group.
    Leave {
        /// The group.
        name: String,
    },
    /// Send a message to a group.
    Send {
        /// The group.
        name: String,
        /// The message text.
        text: String,
    },
}

fn open(profile: &Path) -> anyhow::Result<Client> {
    Ok(Client::open(profile)?)
}

/// Runs a client command.
pub async fn run(command: Command, profile: &Path, out: Output) -> anyhow::Result<()> {
    match command {
        Command::Register { invite, username } => {
            let client = Client::register(profile, &invite, &username).await?;
            out.value(
                &serde_json::json!({
                    "username": client.username(),
                    "server": client.invite().address(),
                    "profile": profile.display().to_string(),
                }),
                &format!(
                    "registered `{}` on {}\nprofile: {}",
                    client.username(),
                    client.invite().address(),
                    profile.display()
                ),
            );
        }
        Command::Send { to, text } => {
            let mut client = open(profile)?;
            let events = client.send(&to, &text).await?;
            out.events(&events);
            out.value(
                &serde_json::json!({ "sent": true, "to": to }),
                &format!("sent to {to}"),
            );
        }
        Command::Group(g) => {
            let mut client = open(profile)?;
            let (events, done) = match &g {
                GroupCommand::Create { name, members } => {
                    let m: Vec<&str> = members.iter().map(String::as_str).collect();
                    (
                        client.group_create(name, &m).await?,
                        format!("created group `{name}`"),
                    )
                }
                GroupCommand::Add { name, members } => {
                    let m: Vec<&str> = members.iter().map(String::as_str).collect();
                    (
                        client.group_add(name, &m).await?,
                        format!("added {} to `{name}`", members.join(", ")),
                    )
                }
                GroupCommand::Remove { name, member } => (
                    client.group_remove(name, member).await?,
                    format!("removed {member} from `{name}`"),
                ),
                GroupCommand::Leave { name } => {
                    (client.group_leave(name).await?, format!("left `{name}`"))
                }
                GroupCommand::Send { name, text } => (
                    client.group_send(name, text).await?,
                    format!("sent to `{name}`"),
                ),
            };
            out.events(&events);
            out.value(&serde_json::json!({ "ok": true, "done": done }), &done);
        }
        Command::Listen => {
            let mut client = open(profile)?;
            if !out.json {
                eprintln!("listening as `{}` (Ctrl-C to stop)", client.username());
            }
            client
                .listen(|e| out.event(e), crate::daemon::shutdown_signal())
                .await
                .context("listening stopped")?;
        }
        Command::Sync => {
            let mut client = open(profile)?;
            let events = client.sync().await?;
            out.events(&events);
            if !out.json && events.is_empty() {
                println!("nothing new");
            }
        }
        Command::History {
            conversation,
            limit,
            offline,
        } => {
            let mut client = open(profile)?;
            if !offline {
                for e in client.sync().await? {
                    // History's output stays clean for scripts: warnings go to stderr.
                    if let umbra_client::Event::Warning { text } = e {
                        eprintln!("warning: {text}");
                    }
                }
            }
            let entries = client.history(conversation.as_deref(), limit)?;
            out.history(&entries, client.username());
        }
        Command::Contacts => {
            let client = open(profile)?;
            let contacts = client.contacts()?;
            let mut text = String::new();
            for c in &contacts {
                text.push_str(&format!(
                    "{:<20} key {}…  {}\n",
                    c.username,
                    &c.identity_key[..16.min(c.identity_key.len())],
                    if c.verified {
                        "verified"
                    } else {
                        "not verified"
                    }
                ));
            }
            if contacts.is_empty() {
                text.push_str("(no contacts yet)\n");
            }
            out.value(&contacts, text.trim_end());
        }
        Command::Conversations => {
            let client = open(profile)?;
            let convs = client.conversations()?;
            let mut text = String::new();
            for c in &convs {
                text.push_str(&format!(
                    "{:<20} {:<6} {}{}\n",
                    c.name,
                    c.kind,
                    c.members.join(", "),
                    if c.active { "" } else { " (left)" }
                ));
            }
            if convs.is_empty() {
                text.push_str("(no conversations yet)\n");
            }
            out.value(&convs, text.trim_end());
        }
        Command::Verify {
            user,
            mark_verified,
        } => {
            let mut client = open(profile)?;
            let number = client.verify(&user, mark_verified).await?;
            out.value(
                &serde_json::json!({ "user": user, "safety_number": number, "verified": mark_verified }),
                &format!(
                    "Safety number with {user}:\n  {number}\nCompare it with {user} in person or on a call; \
                     if it matches, run `umbra verify {user} --mark-verified`.{}",
                    if mark_verified { "\nMarked as verified." } else { "" }
                ),
            );
        }
        Command::IceServers => {
            let mut client = open(profile)?;
            let creds = client.relay_credentials().await?;
            let value = serde_json::json!({
                "iceServers": [{
                    "urls": creds.urls,
                    "username": creds.username,
                    "credential": creds.password,
                }],
                "iceTransportPolicy": "relay",
                "ttl_secs": creds.ttl_secs,
            });
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            out.value(&value, &pretty);
        }
        Command::Whoami => {
            let client = open(profile)?;
            out.value(
                &serde_json::json!({
                    "username": client.username(),
                    "invite": client.invite().to_string(),
                    "profile": profile.display().to_string(),
                }),
                &format!(
                    "{} on {}\nprofile: {}",
                    client.username(),
                    client.invite().address(),
                    profile.display()
                ),
            );
        }
        Command::Serve(_) | Command::Server(_) | Command::Demo | Command::Bench(_) => {
            unreachable!("handled in main")
        }
    }
    Ok(())
}
