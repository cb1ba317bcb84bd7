//! `umbra demo`: a temporary node and three scripted users, narrated.
//!
//! Everything is real: the server listens on a loopback port, each user has
//! its own profile directory and talks to the server over the Noise channel,
//! exactly as separate `umbra` processes would. At the end the server's
//! database is opened and everything it holds is printed.

use std::path::Path;

use anyhow::Context;
use umbra_client::{Client, Event};
use umbra_server::{Server, ServerConfig};

use crate::output::Output;

fn step(text: &str) {
    say!("\n== {text}");
}

fn show(who: &str, events: &[Event]) {
    for e in events {
        match e {
            Event::Message {
                conversation,
                sender,
                text,
                ..
            } => {
                if conversation == sender {
                    say!("   {who} sees  {sender}: {text}");
                } else {
                    say!("   {who} sees  [{conversation}] {sender}: {text}");
                }
            }
            Event::Info { conversation, text } => {
                say!("   {who} sees  * [{conversation}] {text}")
            }
            Event::Warning { text } => say!("   {who}: warning: {text}"),
            Event::Receipt { from, read, .. } => {
                let what = if *read { "read by" } else { "delivered to" };
                say!("   {who} sees  ({what} {from})")
            }
            Event::Call(_) => {}
        }
    }
}

/// Prints every row the server stores that relates to messages.
fn show_server_storage(db: &Path, names: &[(&str, Vec<u8>)]) -> anyhow::Result<()> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context("opening the server database")?;
    let mut stmt = conn.prepare(
        "SELECT id, mailbox_id, length(sealed), introduction FROM envelopes ORDER BY id",
    )?;
    let rows: Vec<(i64, Vec<u8>, i64, bool)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    say!("   table `envelopes` (the only place messages live on the server):");
    say!(
        "   {:>4}  {:<34} {:>6}  introduction",
        "id",
        "mailbox id",
        "bytes"
    );
    for (id, mailbox, len, intro) in &rows {
        let owner = names
            .iter()
            .find(|(_, m)| m == mailbox)
            .map(|(n, _)| format!("  <- {n}'s device (the demo knows; the server only has the id)"))
            .unwrap_or_default();
        say!(
            "   {id:>4}  {:<34} {len:>6}  {intro}{owner}",
            hex::encode(mailbox)
        );
    }
    if rows.is_empty() {
        say!("   (empty: every envelope was acknowledged and deleted)");
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('envelopes')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    say!(
        "   its columns: {} — no sender, no time finer than a day, no address.",
        columns.join(", ")
    );
    Ok(())
}

/// Runs the tour.
pub async fn run(_out: Output) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        metrics_listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().join("server"),
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await?;
    let invite = server.invite().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    step("A temporary Umbra server is running");
    say!("   invite link: {invite}");

    step("alice, bob and carol register (each in their own profile directory)");
    let mut alice =
        Client::register(&dir.path().join("alice"), &invite, "alice", None, None).await?;
    let mut bob = Client::register(&dir.path().join("bob"), &invite, "bob", None, None).await?;
    let mut carol =
        Client::register(&dir.path().join("carol"), &invite, "carol", None, None).await?;
    say!("   3 accounts; each device uploaded MLS key packages and keeps its keys locally");
    let mailbox = |c: &Client| c.mailbox_id().to_vec();
    let names = [
        ("alice", mailbox(&alice)),
        ("bob", mailbox(&bob)),
        ("carol", mailbox(&carol)),
    ];

    step("alice writes to bob (a 1:1 chat is a two-member MLS group)");
    show(
        "alice",
        &alice.send("bob", "Hi Bob! Lunch tomorrow?").await?,
    );
    say!("   alice -> bob: Hi Bob! Lunch tomorrow?");
    show("bob", &bob.sync().await?);
    show(
        "bob",
        &bob.send("alice", "Sure, 12:30 at the usual place.").await?,
    );
    say!("   bob -> alice: Sure, 12:30 at the usual place.");
    show("alice", &alice.sync().await?);

    step("carol goes offline; alice creates the group `weekend` with bob and carol");
    show(
        "alice",
        &alice.group_create("weekend", &["bob", "carol"]).await?,
    );
    show(
        "alice",
        &alice.group_send("weekend", "Hike on Saturday?").await?,
    );
    say!("   alice -> weekend: Hike on Saturday?");
    show("bob", &bob.sync().await?);
    show(
        "bob",
        &bob.group_send("weekend", "I'm in, I'll bring snacks.")
            .await?,
    );
    say!("   bob -> weekend: I'm in, I'll bring snacks.");
    show("alice", &alice.sync().await?);

    step("What the server holds while carol is offline");
    let server_db = dir
        .path()
        .join("server")
        .join(umbra_server::server::DB_FILE);
    show_server_storage(&server_db, &names)?;

    step("carol comes back online and catches up");
    show("carol", &carol.sync().await?);
    show("carol", &carol.group_send("weekend", "Count me in!").await?);
    say!("   carol -> weekend: Count me in!");
    show("alice", &alice.sync().await?);
    show("bob", &bob.sync().await?);

    step("What the server holds now");
    show_server_storage(&server_db, &names)?;

    step("Safety numbers: alice and bob compare these out of band");
    say!("   alice sees: {}", alice.verify("bob", false).await?);
    say!("   bob sees:   {}", bob.verify("alice", false).await?);

    let _ = stop.send(());
    task.await.context("server task")??;
    say!("\nDone. Try it for real: see the README's quick start.");
    Ok(())
}
