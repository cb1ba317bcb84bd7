//! `--acme` against Pebble, the ACME test server (Debian's `pebble`): a CA's
//! whole flow over TLS-ALPN-01 on the proxy's own TLS port, issuance, then
//! renewal of a certificate that Pebble makes short-lived. The served
//! certificate must verify against Pebble's root for the domain, the stored
//! copy must be private, and admitted clients must get through unchanged.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use umbra_proxy::{Proxy, ProxyConfig};

mod common;

use common::*;

/// Child processes killed when the test ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts the mock DNS (every name is 127.0.0.1) and Pebble, validating
/// TLS-ALPN-01 on `tls_port`; returns the directory and management ports.
fn start_pebble(dir: &Path, tls_port: u16, validity_secs: u64) -> (Children, u16, u16) {
    ca_and_leaf(dir, "test CA for pebble", "pebble");
    let (acme, mgmt, dns, dns_mgmt, http) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let config = format!(
        r#"{{"pebble":{{"listenAddress":"127.0.0.1:{acme}","managementListenAddress":"127.0.0.1:{mgmt}",
"certificate":"{d}/pebble.pem","privateKey":"{d}/pebble.key","httpPort":{http},"tlsPort":{tls_port},
"ocspResponderURL":"","externalAccountBindingRequired":false,"certificateValidityPeriod":{validity_secs}}}}}"#,
        d = dir.display()
    );
    std::fs::write(dir.join("pebble.json"), config).expect("write");
    let log = |name: &str| std::fs::File::create(dir.join(name)).expect("log");
    let dns_server = Command::new("pebble-challtestsrv")
        .args([
            "-defaultIPv4",
            "127.0.0.1",
            // No AAAA answers: Pebble asks for them first and dials the first.
            "-defaultIPv6",
            "",
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{dns_mgmt}"),
        ])
        .stdout(log("challtestsrv.log"))
        .stderr(log("challtestsrv.err"))
        .spawn()
        .expect("pebble is needed for this test (apt-get install pebble)");
    let pebble = Command::new("pebble")
        .args([
            "-config",
            &dir.join("pebble.json").display().to_string(),
            "-dnsserver",
            &format!("127.0.0.1:{dns}"),
        ])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdin(Stdio::null())
        .stdout(log("pebble.log"))
        .stderr(log("pebble.err"))
        .spawn()
        .expect("pebble is needed for this test (apt-get install pebble)");
    let children = Children(vec![dns_server, pebble]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", acme)).is_err() {
        assert!(Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (children, acme, mgmt)
}

/// The served certificate, verified against `root` for `domain`, and the
/// site's answer over it.
async fn fetch_verified(addr: SocketAddr, domain: &str, root: &[u8]) -> (Vec<u8>, String) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root) {
        roots.add(c.expect("root pem")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(domain.to_string()).expect("name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("the served certificate verifies against the CA's root");
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .expect("a certificate");
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut page = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut page)).await;
    (leaf, text(&page))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_by_pebble_over_tls_alpn_and_renewed() {
    // The proxy's own account of what went wrong, on the test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let up = upstream().await;
    let data = dir.path().join("proxy");
    let config = ProxyConfig {
        tls_listen: vec!["127.0.0.1:0".parse().expect("addr")],
        plain_listen: Vec::new(),
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data.clone(),
        upstream: Some(up.addr.to_string()),
        acme: Some("proxy.test".into()),
        ..ProxyConfig::default()
    };
    // Bind first: Pebble must know which port to validate on.
    let mut config = config;
    let proxy_probe = Proxy::bind(config.clone()).await.expect("bind");
    let tls = proxy_probe.tls_addrs()[0];
    drop(proxy_probe);
    config.tls_listen = vec![tls];
    let (_children, acme_port, mgmt) = start_pebble(dir.path(), tls.port(), 30);
    config.acme_directory = format!("https://127.0.0.1:{acme_port}/dir");
    config.acme_ca_root = Some(dir.path().join("ca.pem"));
    let proxy = Proxy::bind(config).await.expect("bind");
    let metrics = proxy.metrics_addr().expect("metrics");
    let secret = proxy.link().secret;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy.run(async {
        let _ = stopped.await;
    }));

    let logs = dir.path().to_path_buf();
    let issued = |n: u64| {
        let logs = logs.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while metric(metrics, "umbra_proxy_acme_issued_total").await < n {
                let failures = metric(metrics, "umbra_proxy_acme_failures_total").await;
                assert!(
                    Instant::now() < deadline && failures == 0,
                    "no certificate #{n}; failures: {failures}; pebble said:\n{}{}",
                    std::fs::read_to_string(logs.join("pebble.log")).unwrap_or_default(),
                    std::fs::read_to_string(logs.join("pebble.err")).unwrap_or_default(),
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    issued(1).await;
    let ca_pem = std::fs::read(dir.path().join("ca.pem")).expect("ca");
    let root = {
        let ca = dir.path().join("ca.pem").display().to_string();
        let url = format!("https://127.0.0.1:{mgmt}/roots/0");
        tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["-sS", "--cacert", &ca, &url])
                .output()
                .map(|o| [o.stdout, o.stderr].concat())
                .expect("curl")
        })
        .await
        .expect("join")
    };
    assert!(text(&root).contains("BEGIN CERTIFICATE"), "{}", text(&root));
    assert!(!ca_pem.is_empty());
    let (first, page) = fetch_verified(tls, "proxy.test", &root).await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");

    // Stored where the proxy keeps its state, readable by it alone.
    let stored = data.join("acme").join("proxy.test.pem");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&stored)
        .expect("stored")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is private");

    // Admitted clients get through on the CA's certificate too.
    let link = umbra_wire::proxy::ProxyLink {
        host: "127.0.0.1".into(),
        port: tls.port(),
        secret,
        tls: true,
        front: None,
    };
    let route = umbra_net::dial::Route::Proxy(link);
    let mut s = umbra_net::dial::dial(
        &route,
        umbra_wire::proxy::Target::Messaging,
        Duration::from_secs(5),
    )
    .await
    .expect("dial");
    s.write_all(b"through").await.expect("write");
    let mut back = [0u8; 7];
    s.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"through");

    // Pebble's certificates live 30 s: renewed at two thirds, served at once.
    issued(2).await;
    let (second, _) = fetch_verified(tls, "proxy.test", &root).await;
    assert_ne!(first, second, "a renewed certificate is served");
    let _ = stop.send(());
}
