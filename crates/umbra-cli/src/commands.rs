//! The client commands: each opens the profile, does one thing, prints it.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use umbra_client::Client;
use umbra_wire::proxy::ProxyLink;

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
    /// Send a message to a group: text, a file (--file, uploaded once for
    /// everyone) or a location (--location).
    Send {
        /// The group.
        name: String,
        /// The message text (a caption, with --file or --voice).
        #[arg(required_unless_present_any = ["file", "voice", "location"])]
        text: Option<String>,
        #[command(flatten)]
        attach: crate::attach::Attach,
    },
}

/// `umbra proxy ...`
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProxyCommand {
    /// Checks instead of running.
    #[command(subcommand)]
    pub check: Option<ProxyCheck>,
    /// Settings of the proxy.
    #[command(flatten)]
    pub args: umbra_proxy::ProxyArgs,
}

/// `umbra proxy doctor`
#[derive(Debug, Subcommand)]
pub enum ProxyCheck {
    /// Check the upstreams, the ports and the certificate, and print the link again.
    Doctor(umbra_proxy::ProxyArgs),
}

/// `umbra business ...`
#[derive(Debug, Subcommand)]
pub enum BusinessCommand {
    /// Make this account a business account (or change its card): the
    /// name customers see, and fields such as a website or opening hours.
    /// The server's operator may then verify it; a change of name drops
    /// the verification until it is given again.
    Register {
        /// The name customers see ("Acme Shop"), 1 to 64 characters.
        #[arg(long)]
        name: String,
        /// A field of the card, NAME=VALUE (up to 16).
        #[arg(long, value_name = "NAME=VALUE")]
        field: Vec<String>,
    },
    /// Show USER's business card, checked (default: this account's).
    Show {
        /// The account.
        user: Option<String>,
    },
    /// Who runs this business's endpoint and so can read its chats: the
    /// business itself, or a host (`umbra business serve` run by a third
    /// party). `--self` takes the chats back: every customer sees a line
    /// saying the host can no longer read what they send.
    Hosting {
        /// Make this device the business's own endpoint again.
        #[arg(long = "self")]
        self_hosted: bool,
    },
    /// Run the business host: the businesses' devices behind an HTTP API
    /// for their own systems, with signed webhooks (a daemon: Ctrl-C or
    /// SIGTERM stops it).
    Serve(umbra_business::config::ServeArgs),
    /// API tokens of the business host.
    #[command(subcommand)]
    Token(crate::business_host::TokenCommand),
    /// Receive a business host's webhooks, as a business's system would:
    /// each signature is checked over the raw body (and its timestamp,
    /// so an old webhook replayed is refused), each event is printed once
    /// as a line of JSON. Until Ctrl-C.
    ReceiveWebhooks(crate::business_host::ReceiveArgs),
}

/// `umbra network ...`
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Go through a proxy from now on (LINK), or no more (--off).
    Proxy {
        /// The proxy link (umbra://proxy?...) a volunteer shared.
        #[arg(required_unless_present = "off")]
        link: Option<String>,
        /// Connect directly again.
        #[arg(long, conflicts_with = "link")]
        off: bool,
    },
    /// Show how this profile reaches its server.
    Show,
}

pub(crate) fn open(
    profile: &Path,
    proxy: &Option<ProxyLink>,
    fd: Option<i32>,
) -> anyhow::Result<Client> {
    let passphrase = crate::unlock::current(profile, fd)?;
    let mut client = Client::open(profile, passphrase.as_deref().map(|p| p.as_str()))?;
    if let Some(link) = proxy {
        client.use_proxy(link.clone());
    }
    Ok(client)
}

/// What `register` and `link` print: the account, its server, the profile.
pub(crate) fn account_made(client: &Client, profile: &Path, text: &str, out: Output) {
    out.value(
        &serde_json::json!({
            "username": client.username(),
            "server": client.invite().address(),
            "profile": profile.display().to_string(),
        }),
        &format!("{text}\nprofile: {}", profile.display()),
    );
}

/// Runs a client command.
pub async fn run(
    command: Command,
    profile: &Path,
    proxy: Option<ProxyLink>,
    fd: Option<i32>,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        Command::Register {
            invite,
            username,
            no_passphrase,
        } => {
            let passphrase = crate::unlock::for_new_profile(profile, fd, no_passphrase)?;
            let passphrase = passphrase.as_deref().map(|p| p.as_str());
            let client = Client::register(profile, &invite, &username, proxy, passphrase).await?;
            let text = format!(
                "registered `{}` on {}",
                client.username(),
                client.invite().address()
            );
            account_made(&client, profile, &text, out);
        }
        Command::Send { to, text, attach } if attach.any() => {
            let mut client = open(profile, &proxy, fd)?;
            let target = umbra_client::attachments::Target::User(&to);
            crate::attach::send(&mut client, target, text.as_deref(), &attach, &out).await?;
        }
        Command::Attachments { cmd: None } => {
            let client = open(profile, &proxy, fd)?;
            crate::attach::list(&client, &out)?;
        }
        Command::Attachments {
            cmd: Some(crate::attach::AttachmentsCommand::Delete { id }),
        } => {
            let mut client = open(profile, &proxy, fd)?;
            let name = client.delete_upload(&id).await?;
            out.value(
                &serde_json::json!({ "deleted": name }),
                &format!("deleted `{name}` from the server: whoever has not fetched it can no longer get it"),
            );
        }
        Command::Play { id, out: to } => {
            let mut client = open(profile, &proxy, fd)?;
            crate::attach::play(&mut client, &id, &to, &out).await?;
        }
        Command::Save { id, path } => {
            let mut client = open(profile, &proxy, fd)?;
            crate::attach::save(&mut client, &id, path, &out).await?;
        }
        Command::Send { to, text, .. } => {
            let mut client = open(profile, &proxy, fd)?;
            let text = text.unwrap_or_default();
            let events = client.send(&to, &text).await?;
            out.events(&events);
            out.value(
                &serde_json::json!({ "sent": true, "to": to }),
                &format!("sent to {to}"),
            );
        }
        Command::Group(GroupCommand::Send { name, text, attach }) if attach.any() => {
            let mut client = open(profile, &proxy, fd)?;
            let target = umbra_client::attachments::Target::Group(&name);
            crate::attach::send(&mut client, target, text.as_deref(), &attach, &out).await?;
        }
        Command::Group(g) => {
            let mut client = open(profile, &proxy, fd)?;
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
                GroupCommand::Send { name, text, .. } => (
                    client
                        .group_send(name, text.as_deref().unwrap_or_default())
                        .await?,
                    format!("sent to `{name}`"),
                ),
            };
            out.events(&events);
            out.value(&serde_json::json!({ "ok": true, "done": done }), &done);
        }
        Command::Listen { auto_answer, media } => {
            let mut client = open(profile, &proxy, fd)?;
            client.shows_messages(true);
            if !out.json {
                tell!("listening as `{}` (Ctrl-C to stop)", client.username());
            }
            let calls = crate::calling::incoming(&media, auto_answer, out);
            client
                .listen_calls(
                    |e| out.event(e),
                    crate::daemon::shutdown_signal(),
                    Some(calls),
                )
                .await
                .context("listening stopped")?;
        }
        Command::Call { user, media, ring } => {
            let mut client = open(profile, &proxy, fd)?;
            crate::calling::call(&mut client, &user, &media, &ring, out).await?;
        }
        Command::Calls { limit } => {
            let client = open(profile, &proxy, fd)?;
            crate::calling::list(&client, limit, out)?;
        }
        Command::Settings(cmd) => {
            let client = open(profile, &proxy, fd)?;
            crate::calling::settings(&client, cmd, out)?;
        }
        Command::Sync => {
            let mut client = open(profile, &proxy, fd)?;
            client.shows_messages(true);
            let events = client.sync().await?;
            out.events(&events);
            if !out.json && events.is_empty() {
                say!("nothing new");
            }
        }
        Command::History {
            conversation,
            limit,
            offline,
        } => {
            let mut client = open(profile, &proxy, fd)?;
            if !offline {
                for e in client.sync().await? {
                    // History's output stays clean for scripts: warnings go to stderr.
                    if let umbra_client::Event::Warning { text } = e {
                        tell!("warning: {text}");
                    }
                }
            }
            let entries = client.history(conversation.as_deref(), limit)?;
            let labels = match &conversation {
                Some(name) => client
                    .conversations()?
                    .into_iter()
                    .find(|c| &c.name == name)
                    .map(|c| c.hosting)
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            out.history(&entries, client.username(), &labels);
            // Shown: read (receipts go now, or with the next command).
            client.mark_read(conversation.as_deref())?;
            if !offline {
                for e in client.send_receipts().await? {
                    if let umbra_client::Event::Warning { text } = e {
                        tell!("warning: {text}");
                    }
                }
            }
        }
        Command::Business(cmd) => {
            let mut client = open(profile, &proxy, fd)?;
            match cmd {
                BusinessCommand::Register { name, field } => {
                    let fields = field
                        .iter()
                        .map(|f| {
                            f.split_once('=')
                                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                                .ok_or_else(|| {
                                    anyhow::Error::from(umbra_client::ClientError::Invalid(
                                        format!("`{f}` is not a field: write NAME=VALUE"),
                                    ))
                                })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let done = client.register_business(&name, &fields).await?;
                    if client.hosting()?.is_none() {
                        // A new business runs its own endpoint until it
                        // says otherwise.
                        let own = client.make_hosting(None)?;
                        client.set_hosting(own).await?;
                    }
                    let l = &done.label;
                    out.value(
                        &done,
                        &format!(
                            "`{}` is a business account: customers see \"{}\"{}",
                            client.username(),
                            l.name,
                            if l.verified {
                                ", verified by this server"
                            } else {
                                " (not verified: the server's operator runs `umbra server business verify`)"
                            }
                        ),
                    );
                }
                BusinessCommand::Hosting { self_hosted } => {
                    if self_hosted {
                        let own = client.make_hosting(None)?;
                        let done = client.set_hosting(own).await?;
                        out.value(
                            &done,
                            &format!(
                                "this device is the business's own endpoint: its chats are end to end \
                                 with it ({} conversation(s) told)",
                                done.conversations
                            ),
                        );
                    } else {
                        let host = client.hosting()?;
                        let text = match &host {
                            None => "this is not a business account".to_string(),
                            Some(None) => {
                                "this business runs its own endpoint: its chats are end to end with it"
                                    .to_string()
                            }
                            Some(Some(h)) => {
                                format!("{h} runs this business's endpoint and can read its chats")
                            }
                        };
                        out.value(
                            &serde_json::json!({ "business": host.is_some(), "host": host.flatten() }),
                            &text,
                        );
                    }
                }
                BusinessCommand::Serve(_)
                | BusinessCommand::Token(_)
                | BusinessCommand::ReceiveWebhooks(_) => {
                    anyhow::bail!("the business host's commands take no profile")
                }
                BusinessCommand::Show { user } => {
                    let user = user.unwrap_or_else(|| client.username().to_string());
                    let label = client.business_card(&user).await?;
                    let text = match &label {
                        None => format!("`{user}` is a personal account"),
                        Some(l) => {
                            let mut t = format!("{user}: {}", crate::output::business_line(l));
                            for (n, v) in &l.fields {
                                t.push_str(&format!("\n  {n}: {v}"));
                            }
                            t
                        }
                    };
                    out.value(
                        &serde_json::json!({ "user": user, "business": label }),
                        &text,
                    );
                }
            }
        }
        Command::Block { user } => {
            let client = open(profile, &proxy, fd)?;
            let newly = client.block(&user)?;
            out.value(
                &serde_json::json!({ "blocked": user, "already": !newly }),
                &if newly {
                    format!(
                        "blocked `{user}`: nothing from them is shown, and no receipt goes back"
                    )
                } else {
                    format!("`{user}` was already blocked")
                },
            );
        }
        Command::Unblock { user } => {
            let client = open(profile, &proxy, fd)?;
            let was = client.unblock(&user)?;
            out.value(
                &serde_json::json!({ "unblocked": user, "was_blocked": was }),
                &if was {
                    format!("unblocked `{user}`")
                } else {
                    format!("`{user}` was not blocked")
                },
            );
        }
        Command::Blocked => {
            let client = open(profile, &proxy, fd)?;
            let list = client.blocked()?;
            let text = if list.is_empty() {
                "nobody is blocked".to_string()
            } else {
                list.join("\n")
            };
            out.value(&list, &text);
        }
        Command::Contacts => {
            let client = open(profile, &proxy, fd)?;
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
            let client = open(profile, &proxy, fd)?;
            let convs = client.conversations()?;
            let mut text = String::new();
            for c in &convs {
                let mut business = c
                    .business
                    .as_ref()
                    .map(|b| format!("  business: {}", crate::output::business_line(b)))
                    .unwrap_or_default();
                for l in &c.hosting {
                    business.push_str(&format!("\n{:<20} {}", "", l.text));
                }
                let keys = match (c.active, c.post_quantum) {
                    (false, _) => " (left)",
                    (true, true) => "  [post-quantum]",
                    (true, false) => "  [classical]",
                };
                text.push_str(&format!(
                    "{:<20} {:<6} {}{keys}{business}\n",
                    c.name,
                    c.kind,
                    c.members.join(", "),
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
            let mut client = open(profile, &proxy, fd)?;
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
            let mut client = open(profile, &proxy, fd)?;
            let creds = client.relay_credentials().await?;
            let mut value = serde_json::json!({
                "iceServers": [{
                    "urls": creds.urls,
                    "username": creds.username,
                    "credential": creds.password,
                }],
                "iceTransportPolicy": "relay",
                "ttl_secs": creds.ttl_secs,
            });
            // The group call unit takes the same credentials.
            if !creds.unit.is_empty() {
                value["unit"] = serde_json::Value::String(creds.unit);
            }
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            out.value(&value, &pretty);
        }
        Command::Network(n) => {
            let mut client = open(profile, &None, fd)?;
            match n {
                NetworkCommand::Proxy { link, off } => {
                    let link = match (link, off) {
                        (Some(text), false) => Some(ProxyLink::parse(&text)?),
                        _ => None,
                    };
                    let text = match &link {
                        Some(l) => format!(
                            "from now on this profile reaches its server through the proxy at {}",
                            l.address()
                        ),
                        None => "this profile connects to its server directly".to_string(),
                    };
                    client.save_proxy(link)?;
                    out.value(
                        &serde_json::json!({ "proxy": client.proxy().map(|l| l.address()) }),
                        &text,
                    );
                }
                NetworkCommand::Show => {
                    let text = match client.proxy() {
                        Some(l) => format!(
                            "server {} reached through the proxy at {} ({})",
                            client.invite().address(),
                            l.address(),
                            if l.tls { "TLS" } else { "plain TCP" }
                        ),
                        None => format!("server {} reached directly", client.invite().address()),
                    };
                    out.value(&serde_json::json!({ "server": client.invite().address(), "proxy": client.proxy().map(|l| l.address()) }), &text);
                }
            }
        }
        Command::Whoami => {
            let client = open(profile, &proxy, fd)?;
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
        Command::Passphrase(cmd) => crate::unlock::run(cmd, profile, fd, out)?,
        Command::Serve(_)
        | Command::Server(_)
        | Command::Relay(_)
        | Command::Proxy(_)
        | Command::Demo
        | Command::Devices { .. }
        | Command::Link { .. }
        | Command::Bench(_) => {
            unreachable!("handled in main")
        }
    }
    Ok(())
}
