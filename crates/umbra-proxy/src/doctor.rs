//! `umbra proxy doctor`: what a volunteer checks before sharing the link.

use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::config::ProxyConfig;
use crate::{front, link, tls};

fn line(ok: bool, text: &str) -> bool {
    println!("[{}] {text}", if ok { " ok " } else { "FAIL" });
    ok
}

async fn reachable(what: &str, addr: &str) -> bool {
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(_)) => line(
            true,
            &format!("{what} {addr} answers ({} ms)", start.elapsed().as_millis()),
        ),
        Ok(Err(e)) => line(false, &format!("{what} {addr} cannot be reached: {e}")),
        Err(_) => line(false, &format!("{what} {addr} did not answer within 5 s")),
    }
}

/// Runs every check, prints the link; returns whether all passed.
pub async fn run(config: &ProxyConfig) -> anyhow::Result<bool> {
    let mut all = true;
    if let Some(up) = &config.upstream {
        all &= reachable("messaging server", up).await;
    }
    if let Some(up) = &config.relay_upstream {
        all &= reachable("call relay", up).await;
    } else {
        println!("[info] no --relay-upstream: calls will not go through this proxy");
    }
    for (addr, kind) in config
        .tls_listen
        .iter()
        .map(|a| (a, "TLS"))
        .chain(config.plain_listen.iter().map(|a| (a, "plain")))
    {
        match TcpListener::bind(addr).await {
            Ok(_) => all &= line(true, &format!("port {addr} ({kind}) is free to listen on")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                println!("[info] port {addr} ({kind}) is in use: is the proxy already running?");
            }
            Err(e) => {
                all &= line(
                    false,
                    &format!(
                        "cannot listen on {addr} ({kind}): {e}; ports below 1024 need root or CAP_NET_BIND_SERVICE"
                    ),
                )
            }
        }
    }
    let host = config
        .public_host
        .clone()
        .unwrap_or_else(|| "127.0.0.1".to_string());
    if config.public_host.is_none() {
        println!(
            "[info] no --public-host: the link names 127.0.0.1, which only works on this machine"
        );
    }
    if let (Some(addr), Some(name)) = (&config.front, config.front_name()) {
        all &= match front::learn(addr, &name, Duration::from_secs(5)).await {
            Some(_) => line(
                true,
                &format!("fronted site {addr} answers a TLS 1.3 hello for {name}"),
            ),
            None => line(
                false,
                &format!(
                    "fronted site {addr} did not answer a TLS 1.3 hello for {name}: fronting needs a site reachable from here that speaks TLS 1.3"
                ),
            ),
        };
    } else if !config.tls_listen.is_empty() {
        match tls::load(
            config.cert_file.as_deref(),
            config.key_file.as_deref(),
            &config.data_dir,
            &host,
        ) {
            Ok(cert) => {
                let kind = if cert.generated {
                    "self-signed (generated)"
                } else {
                    "operator's"
                };
                all &= line(
                    true,
                    &format!("TLS certificate: {kind}, SHA-256 {}", cert.fingerprint),
                );
            }
            Err(e) => all &= line(false, &format!("TLS certificate: {e:#}")),
        }
    }
    let secret = link::load_or_create_secret(&config.data_dir)?;
    let port = config
        .link_port
        .or_else(|| config.tls_listen.first().map(|a| a.port()))
        .or_else(|| config.plain_listen.first().map(|a| a.port()))
        .unwrap_or(443);
    let link = umbra_wire::proxy::ProxyLink {
        host,
        port,
        secret,
        tls: config.tls_listen.iter().any(|a| a.port() == port),
        front: config
            .front_name()
            .filter(|_| config.tls_listen.iter().any(|a| a.port() == port)),
    };
    println!(
        "\nProxy link (share it with the people you want to help):\n{}",
        link::show(&link)
    );
    Ok(all)
}
