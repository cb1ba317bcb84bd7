//! `umbra server doctor`: checks a node's settings against what it will
//! need (its keys, its database and that database's schema, NATS and the
//! cluster key, its clock against the database's), each finding a line that
//! says what is wrong and what to do.

use std::time::Duration;

use crate::ServerConfig;
use crate::database::DB_FILE;

/// How far this machine's clock may be from the database's.
const CLOCK_SKEW_OK: f64 = 2.0;

/// One thing checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// Whether it is as it should be.
    pub ok: bool,
    /// What was checked and found, or what is wrong and what to do.
    pub what: String,
}

fn ok(what: impl Into<String>) -> Finding {
    Finding {
        ok: true,
        what: what.into(),
    }
}

fn problem(what: impl Into<String>) -> Finding {
    Finding {
        ok: false,
        what: what.into(),
    }
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Checks everything `config` names; never changes anything.
pub async fn check(config: &ServerConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let dir = &config.data_dir;
    let supported = umbra_store::sqlite::schema::SCHEMA_VERSION;
    // No node has used the database yet: this is the first node, which
    // makes the keys the others copy.
    let mut first_node = false;
    match &config.database {
        None => {
            let path = dir.join(DB_FILE);
            out.push(if !path.exists() {
                ok(format!(
                    "database {} will be made on first start (SQLite)",
                    path.display()
                ))
            } else {
                match umbra_store::SqliteStore::schema_version(&path) {
                    Ok(v) if v > supported => problem(format!(
                        "database {} is schema version {v}, newer than this program's {supported}: run the newer umbra",
                        path.display()
                    )),
                    Ok(v) => ok(format!(
                        "database {} (SQLite), schema version {v}{}",
                        path.display(),
                        if v < supported {
                            format!(", upgraded to {supported} in place at the next start")
                        } else {
                            String::new()
                        }
                    )),
                    Err(e) => problem(format!("database {} cannot be read: {e}", path.display())),
                }
            });
        }
        Some(url) => {
            let shown = url.shown();
            let u = url.0.clone();
            let health =
                tokio::task::spawn_blocking(move || umbra_store::PgStore::health(&u)).await;
            match health {
                Ok(Ok(h)) => {
                    first_node = h.schema_version == 0;
                    out.push(match h.schema_version {
                        v if v > supported => problem(format!(
                            "database {shown}: schema version {v}, newer than this program's {supported}: run the newer umbra on every node"
                        )),
                        0 => ok(format!(
                            "database {shown} (PostgreSQL {}) is empty: the first node to start makes its tables (schema version {supported})",
                            h.server_version
                        )),
                        v => ok(format!(
                            "database {shown} (PostgreSQL {}), schema version {v}{}",
                            h.server_version,
                            if v < supported {
                                format!(", upgraded to {supported} in place by the first node to start")
                            } else {
                                String::new()
                            }
                        )),
                    });
                    let skew = h.now_unix - now_unix();
                    out.push(if skew.abs() <= CLOCK_SKEW_OK {
                        ok(format!("clock within {:.1} s of the database's", skew.abs()))
                    } else {
                        problem(format!(
                            "this machine's clock is {skew:+.1} s from the database's: run NTP on every node and on the database"
                        ))
                    });
                    out.push(ok(format!(
                        "the database's default synchronous_commit is {} (each node sets it on for its own connections)",
                        h.synchronous_commit
                    )));
                }
                Ok(Err(e)) => out.push(problem(format!(
                    "database {shown} cannot be reached: {e} (is PostgreSQL running, and may this user connect?)"
                ))),
                Err(e) => out.push(problem(format!("database check failed: {e}"))),
            }
        }
    }
    for (file, role) in [
        ("server.key", "the server's key, which invites pin"),
        ("sign.key", "the signing key, the invite's `sign`"),
    ] {
        let path = dir.join(file);
        out.push(if path.exists() {
            ok(format!("{}: {role}", path.display()))
        } else if config.nats.is_some() && !first_node {
            problem(format!(
                "{} is missing ({role}): every node of a cluster has the first node's: copy it from there",
                path.display()
            ))
        } else if config.nats.is_some() {
            ok(format!(
                "{} will be made on first start ({role}): this is the first node; copy it to every other node",
                path.display()
            ))
        } else {
            ok(format!(
                "{} will be made on first start ({role})",
                path.display()
            ))
        });
    }
    if let Some(url) = &config.nats {
        out.push(check_nats(url).await);
        out.push(match &config.cluster_key_file {
            Some(f) if f.exists() => ok(format!("cluster key {}", f.display())),
            Some(f) if first_node => ok(format!(
                "cluster key {} will be made on first start: copy it to every other node",
                f.display()
            )),
            Some(f) => problem(format!(
                "cluster key {} is missing: copy it from the first node",
                f.display()
            )),
            None => problem("nats is set without cluster_key_file"),
        });
    }
    if let Some(f) = &config.relay_secret_file {
        out.push(match umbra_daemon::config::read_secret(f) {
            Ok(_) => ok(format!("relay secret {}", f.display())),
            Err(e) => problem(format!("relay secret {} cannot be read: {e}", f.display())),
        });
    }
    if let Err(e) = config.validate() {
        out.push(problem(e.to_string()));
    }
    out
}

/// Connects to NATS and hears its own message back.
async fn check_nats(url: &str) -> Finding {
    let attempt = async {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        let subject = format!("umbra.doctor.{:016x}", rand::random::<u64>());
        let mut sub = client.subscribe(subject.clone()).await?;
        client.publish(subject, "ping".into()).await?;
        client.flush().await?;
        use futures_util::StreamExt;
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(_)) => Ok::<_, anyhow::Error>(()),
            _ => anyhow::bail!("a message sent was not heard back"),
        }
    };
    match tokio::time::timeout(Duration::from_secs(15), attempt).await {
        Ok(Ok(())) => ok(format!("NATS at {url}: a message went round")),
        Ok(Err(e)) => problem(format!(
            "NATS at {url}: {e} (is nats-server running there?)"
        )),
        Err(_) => problem(format!("NATS at {url}: no answer in 15 s")),
    }
}
