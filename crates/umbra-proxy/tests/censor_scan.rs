//! A censor's internet scan, against two fresh proxies: what it reads from
//! their certificates (openssl), their pages and headers (curl), and how
//! they behave on HEAD, ranges, unknown methods, HTTP/1.0, keep-alive and
//! bytes that are not HTTP. Nothing may be the same on both that an
//! ordinary web server would not share, and nothing may say "Umbra" or
//! name the library that made the certificate.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::*;

/// Runs a command to completion off the runtime.
async fn run(program: &'static str, args: Vec<String>, stdin: Option<Vec<u8>>) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(program)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} is needed for this test: {e}"));
        if let Some(mut pipe) = child.stdin.take() {
            let _ = pipe.write_all(&stdin.unwrap_or_default());
        }
        let out = child.wait_with_output().expect("wait");
        (text(&out.stdout), text(&out.stderr))
    })
    .await
    .expect("join")
}

/// What a scan learns of one proxy.
struct Scanned {
    cert_text: String,
    subject: String,
    issuer: String,
    serial: String,
    not_before: String,
    not_after: String,
    home_headers: Vec<(String, String)>,
    home_body: String,
    not_found: String,
}

fn headers(raw: &str) -> Vec<(String, String)> {
    raw.lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or("", |(_, v)| v.as_str())
}

fn resolve(host: &str, addr: SocketAddr) -> String {
    format!("{host}:{}:127.0.0.1", addr.port())
}

async fn scan(host: &str, tls: SocketAddr, plain: SocketAddr) -> Scanned {
    let (chain, _) = run(
        "openssl",
        vec![
            "s_client".into(),
            "-connect".into(),
            tls.to_string(),
            "-servername".into(),
            host.into(),
            "-showcerts".into(),
        ],
        Some(Vec::new()),
    )
    .await;
    let pem: String = chain
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .chain(std::iter::once("-----END CERTIFICATE-----\n"))
        .collect();
    let field = |args: &[&str]| {
        let mut a: Vec<String> = vec!["x509".into(), "-noout".into()];
        a.extend(args.iter().map(|s| (*s).to_string()));
        run("openssl", a, Some(pem.clone().into_bytes()))
    };
    let value = |s: String| {
        s.split_once('=')
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let cert_text = field(&["-text"]).await.0;
    let subject = value(field(&["-subject", "-nameopt", "RFC2253"]).await.0);
    let issuer = value(field(&["-issuer", "-nameopt", "RFC2253"]).await.0);
    let serial = value(field(&["-serial"]).await.0);
    let not_before = value(field(&["-startdate"]).await.0);
    let not_after = value(field(&["-enddate"]).await.0);

    let url = format!("https://{host}:{}/", tls.port());
    let (home, _) = run(
        "curl",
        vec![
            "-sik".into(),
            "--max-time".into(),
            "10".into(),
            "--resolve".into(),
            resolve(host, tls),
            url,
        ],
        None,
    )
    .await;
    let (raw_head, body) = home.split_once("\r\n\r\n").unwrap_or(("", ""));
    let (not_found, _) = run(
        "curl",
        vec![
            "-si".into(),
            "--max-time".into(),
            "10".into(),
            "--resolve".into(),
            resolve(host, plain),
            format!("http://{host}:{}/wp-login.php", plain.port()),
        ],
        None,
    )
    .await;
    Scanned {
        cert_text,
        subject,
        issuer,
        serial,
        not_before,
        not_after,
        home_headers: headers(raw_head),
        home_body: body.to_string(),
        not_found,
    }
}

/// A certificate's structure as `openssl x509 -text` prints it: versions,
/// algorithms, curve, extension names in their order and criticality, with
/// every value (serial, dates, key, identifiers, names) left out.
fn shape(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            [
                "Version",
                "Algorithm",
                "Public-Key",
                "ASN1 OID",
                "NIST CURVE",
                "X509v3",
                // Basic constraints only: a key identifier is random hex and
                // one in 256 of them starts with "CA:" too.
                "CA:TRUE",
                "CA:FALSE",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(str::to_string)
        .collect()
}

/// `Mon DD HH:MM:SS YYYY GMT` as openssl prints it, to Unix seconds.
fn openssl_date(s: &str) -> i64 {
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let w: Vec<&str> = s.split_whitespace().collect();
    let month = months.iter().position(|m| *m == w[0]).expect("month") as i64 + 1;
    let day: i64 = w[1].parse().expect("day");
    let hms: Vec<i64> = w[2].split(':').map(|x| x.parse().expect("time")).collect();
    let year: i64 = w[3].parse().expect("year");
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fresh_proxies_share_nothing_a_scan_could_use() {
    let up = upstream().await;
    let a = start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.public_host = Some("relay-a.example.net".into());
        // A scanner on a loaded machine may take more than a second.
        c.handshake_timeout_secs = 10;
    })
    .await;
    let b = start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.public_host = Some("home-b.example.org".into());
        // A scanner on a loaded machine may take more than a second.
        c.handshake_timeout_secs = 10;
    })
    .await;
    // What openssl itself makes for a self-signed server certificate.
    let (reference, _) = run(
        "sh",
        vec![
            "-c".into(),
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout /dev/null -subj /CN=relay-a.example.net \
             -addext subjectAltName=DNS:relay-a.example.net -days 365 2>/dev/null \
             | openssl x509 -noout -text"
                .into(),
        ],
        None,
    )
    .await;
    let sa = scan("relay-a.example.net", a.tls, a.plain).await;
    let sb = scan("home-b.example.org", b.tls, b.plain).await;

    assert_eq!(
        shape(&sa.cert_text),
        shape(&reference),
        "{}\n{reference}",
        sa.cert_text
    );
    for (host, s) in [("relay-a.example.net", &sa), ("home-b.example.org", &sb)] {
        // An ordinary self-signed server certificate for the proxy's name.
        assert_eq!(s.subject, format!("CN={host}"), "{}", s.cert_text);
        assert_eq!(s.issuer, s.subject);
        assert!(
            s.cert_text.contains(&format!("DNS:{host}")),
            "{}",
            s.cert_text
        );
        assert!(s.cert_text.contains("CA:TRUE"));
        assert!(s.cert_text.contains("Subject Key Identifier"));
        for tell in ["rcgen", "umbra", "Umbra", "self signed cert"] {
            assert!(!s.cert_text.contains(tell), "{tell} in {}", s.cert_text);
        }
        let (from, to) = (openssl_date(&s.not_before), openssl_date(&s.not_after));
        let now = i64::try_from(now()).expect("now");
        assert!(now - from >= 0 && now - from <= 3_700, "{}", s.not_before);
        assert_eq!(to - from, 365 * 86_400, "a year, as openssl -days 365");
        assert!(s.serial.len() >= 38, "a long random serial: {}", s.serial);

        // Answers with the headers of a stock nginx, in its order.
        let names: Vec<&str> = s.home_headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "Server",
                "Date",
                "Content-Type",
                "Content-Length",
                "Last-Modified",
                "Connection",
                "ETag",
                "Accept-Ranges"
            ],
            "{:?}",
            s.home_headers
        );
        assert!(header(&s.home_headers, "Server").starts_with("nginx"));
        assert_eq!(
            header(&s.home_headers, "Content-Length"),
            s.home_body.len().to_string()
        );
        assert!(s.home_body.starts_with("<!DOCTYPE html>"));
        for tell in ["Umbra", "umbra", "proxy", "Welcome", "personal server"] {
            assert!(!s.home_body.contains(tell), "{tell} in {}", s.home_body);
        }
        // nginx's own 404 page, signed with its Server header.
        assert!(
            s.not_found.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{}",
            s.not_found
        );
        assert!(s.not_found.ends_with(&format!(
            "<center><h1>404 Not Found</h1></center>\r\n<hr><center>{}</center>\r\n</body>\r\n</html>\r\n",
            header(&s.home_headers, "Server")
        )));
    }
    // Nothing the two share but what every nginx shares.
    assert_ne!(sa.serial, sb.serial);
    assert_ne!(sa.home_body, sb.home_body, "the built-in site differs");
    for h in ["ETag", "Last-Modified"] {
        assert_ne!(
            header(&sa.home_headers, h),
            header(&sb.home_headers, h),
            "{h}"
        );
    }
    let common: BTreeSet<&(String, String)> = sa
        .home_headers
        .iter()
        .filter(|kv| sb.home_headers.contains(kv))
        .collect();
    for (k, v) in common {
        assert!(
            matches!(
                k.as_str(),
                "Content-Type" | "Connection" | "Accept-Ranges" | "Date" | "Server"
            ),
            "{k}: {v} is the same on both proxies"
        );
    }
    let key = |s: &Scanned| {
        s.cert_text
            .split("pub:")
            .nth(1)
            .map(|t| t.chars().take(200).collect::<String>())
    };
    assert_ne!(key(&sa), key(&sb), "each proxy has its own key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_behaves_like_nginx_on_head_ranges_methods_and_connections() {
    let up = upstream().await;
    let p = start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.public_host = Some("site.example.net".into());
        c.handshake_timeout_secs = 1;
    })
    .await;
    let host = "site.example.net";
    let base = format!("http://{host}:{}/", p.plain.port());
    let curl = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "-s".into(),
            "--max-time".into(),
            "10".into(),
            "--resolve".into(),
            resolve(host, p.plain),
        ];
        args.extend(extra.iter().map(|s| (*s).to_string()));
        run("curl", args, None)
    };
    let (full, _) = curl(&["-i", &base]).await;
    let (full_head, body) = full.split_once("\r\n\r\n").expect("a response");
    let full_headers = headers(full_head);

    // HEAD: the same headers, no body.
    let (head, _) = curl(&["-I", &base]).await;
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert_eq!(
        header(&headers(&head), "Content-Length"),
        header(&full_headers, "Content-Length")
    );
    assert_eq!(
        header(&headers(&head), "ETag"),
        header(&full_headers, "ETag")
    );

    // A range: 206 and exactly those bytes.
    let (part, _) = curl(&["-i", "-r", "0-15", &base]).await;
    let (part_head, part_body) = part.split_once("\r\n\r\n").expect("206");
    assert!(
        part_head.starts_with("HTTP/1.1 206 Partial Content"),
        "{part_head}"
    );
    assert_eq!(part_body, &body[..16]);
    assert_eq!(
        header(&headers(part_head), "Content-Range"),
        format!("bytes 0-15/{}", body.len())
    );
    let (beyond, _) = curl(&["-i", "-r", "999999-", &base]).await;
    assert!(
        beyond.starts_with("HTTP/1.1 416 Requested Range Not Satisfiable"),
        "{beyond}"
    );

    // Conditional: 304 for the ETag it gave.
    let inm = format!("If-None-Match: {}", header(&full_headers, "ETag"));
    let (cached, _) = curl(&["-i", "-H", &inm, &base]).await;
    assert!(cached.starts_with("HTTP/1.1 304 Not Modified"), "{cached}");

    // Methods a static site does not take.
    for method in ["PUT", "DELETE", "BREW", "OPTIONS", "TRACE"] {
        let (r, _) = curl(&["-i", "-X", method, &base]).await;
        assert!(
            r.starts_with("HTTP/1.1 405 Not Allowed\r\n"),
            "{method}: {r}"
        );
    }
    // HTTP/1.0: answered in HTTP/1.1, then closed.
    let (old, _) = curl(&["-i", "-0", &base]).await;
    assert!(
        old.starts_with("HTTP/1.1 200 OK") && old.contains("Connection: close"),
        "{old}"
    );
    // Keep-alive: curl reuses the connection for a second request.
    let (_, log) = curl(&[
        "-v",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &base,
        &format!("{base}robots.txt"),
    ])
    .await;
    assert!(
        log.contains("Re-using existing") || log.contains("Reusing existing"),
        "{log}"
    );

    // Plain HTTP to the TLS port: nginx's special 400.
    let (https_port, _) = run(
        "curl",
        vec![
            "-si".into(),
            "--max-time".into(),
            "10".into(),
            format!("http://127.0.0.1:{}/", p.tls.port()),
        ],
        None,
    )
    .await;
    assert!(
        https_port.starts_with("HTTP/1.1 400 Bad Request\r\nServer: nginx"),
        "{https_port}"
    );
    assert!(
        https_port.contains("<center>The plain HTTP request was sent to HTTPS port</center>")
            && https_port.contains("Connection: close"),
        "{https_port}"
    );

    // Bytes that are not HTTP: nginx's 400, at once, then the connection ends.
    let mut s = TcpStream::connect(p.plain).await.expect("connect");
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut reply))
        .await
        .expect("answered at once")
        .expect("read");
    let reply = text(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 400 Bad Request\r\nServer: nginx"),
        "{reply}"
    );
    assert!(
        reply.contains("Connection: close")
            && reply.contains("<center><h1>400 Bad Request</h1></center>")
    );
}
