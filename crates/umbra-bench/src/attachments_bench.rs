//! `umbra bench attachments`: one large file uploaded and downloaded as an
//! attachment, beside the same bytes through curl and a local nginx (the
//! direct-copy limit on this machine).
//!
//! The file (`--mib`, random bytes) is written once. Umbra: `umbra server`
//! runs as a child (SQLite, blobs in its data directory); the bench uploads
//! the file through the client library's transfer path (sealed on the way,
//! as `umbra send --file` does) and downloads it into a new file (checked
//! and opened, as `umbra save` does). Anchor: nginx (Debian package
//! `nginx-light`) on loopback, one process, `sendfile on`, WebDAV PUT
//! for the upload; `curl -T FILE` up, `curl -o FILE` down. Each direction
//! runs `--runs` times; the median run is reported. CPU: the server's and
//! nginx's from the scheduler's run time, the Umbra client's (this
//! process) likewise, curl's from the kernel's count for
//! waited-for children (10 ms ticks); as milliseconds per MiB.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use umbra_client::transfer;
use umbra_net::dial::Route;
use umbra_wire::invite::Invite;

use crate::cpu::process_runtime_ns;
use crate::util::{RemoveOnDrop, spawn_logged, start_server_with};

/// Flags of `umbra bench attachments`.
#[derive(Debug, Clone, Args)]
pub struct AttachmentsBenchArgs {
    /// Size of the file, MiB.
    #[arg(long, default_value_t = 512)]
    pub mib: u64,
    /// Runs of each direction (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where the file and the copies go (default: the system's temporary
    /// directory). The disk is part of what is measured.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The nginx binary of the anchor.
    #[arg(long, default_value = "nginx")]
    pub nginx: String,
    /// The curl binary of the anchor.
    #[arg(long, default_value = "curl")]
    pub curl: String,
    /// The `umbra` binary to run the server with [default: this one].
    #[arg(long)]
    pub umbra: Option<String>,
}

/// One direction, one system.
#[derive(Debug, Clone, Serialize)]
pub struct Leg {
    /// MiB per second (median run).
    pub mib_per_s: f64,
    /// The server's CPU (umbra server or nginx), ms per MiB.
    pub server_cpu_ms_per_mib: f64,
    /// The client's CPU (the Umbra client or curl), ms per MiB.
    pub client_cpu_ms_per_mib: f64,
}

/// One direction, both systems.
#[derive(Debug, Clone, Serialize)]
pub struct Direction {
    /// `upload` or `download`.
    pub direction: &'static str,
    /// Umbra's transfer.
    pub umbra: Leg,
    /// curl and nginx.
    pub direct: Leg,
    /// Umbra's throughput as a share of the direct copy's.
    pub ratio: f64,
}

/// What `umbra bench attachments` reports.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentsReport {
    /// The file's size, MiB.
    pub mib: u64,
    /// Upload, then download.
    pub directions: Vec<Direction>,
}

/// CPU used by this process's waited-for children so far (`cutime` and
/// `cstime` of `/proc/self/stat`, in ticks of 10 ms: USER_HZ is 100 on
/// Linux), ns.
fn children_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): state is
    // field 3; cutime and cstime are fields 16 and 17.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(13).copied().unwrap_or(0) + fields.get(14).copied().unwrap_or(0);
    ticks * 10_000_000
}

/// What one run measured.
#[derive(Clone, Copy)]
struct Sample {
    seconds: f64,
    server_ns: u64,
    client_ns: u64,
}

fn median(mut samples: Vec<Sample>, mib: u64) -> Leg {
    samples.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let s = samples[samples.len() / 2];
    let per_mib = |ns: u64| ns as f64 / 1e6 / mib as f64;
    Leg {
        mib_per_s: mib as f64 / s.seconds,
        server_cpu_ms_per_mib: per_mib(s.server_ns),
        client_cpu_ms_per_mib: per_mib(s.client_ns),
    }
}

/// Writes `mib` MiB of random bytes to `path`.
fn make_file(path: &Path, mib: u64) -> anyhow::Result<()> {
    use rand::RngCore;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        rand::rngs::OsRng.fill_bytes(&mut block);
        f.write_all(&block)?;
    }
    f.flush()?;
    Ok(())
}

/// nginx on a loopback port, serving `root` and taking PUTs under
/// `/up/`, killed when dropped.
struct Nginx {
    child: tokio::process::Child,
    port: u16,
    pid: u32,
}

async fn start_nginx(bin: &str, dir: &Path, root: &Path) -> anyhow::Result<Nginx> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let tmp = dir.join("nginx-tmp");
    std::fs::create_dir_all(&tmp)?;
    std::fs::create_dir_all(root.join("up"))?;
    let conf = dir.join("nginx.conf");
    let t = tmp.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/nginx-error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
             client_body_temp_path {t};\n  proxy_temp_path {t};\n  fastcgi_temp_path {t};\n\
             uwsgi_temp_path {t};\n  scgi_temp_path {t};\n\
             server {{\n    listen 127.0.0.1:{port};\n    root {root};\n\
             location /up/ {{ dav_methods PUT; client_max_body_size 0; \
             client_body_buffer_size 1m; }}\n  }}\n}}\n",
            d = dir.display(),
            root = root.display(),
        ),
    )?;
    let log = dir.join("nginx.out");
    let args = vec![
        "-e".to_string(),
        dir.join("nginx-error.log").to_string_lossy().into_owned(),
        "-c".to_string(),
        conf.to_string_lossy().into_owned(),
    ];
    let child = spawn_logged(bin, &args, &log, None).with_context(|| {
        format!("starting {bin}: install Debian's nginx-light, or give --nginx")
    })?;
    let pid = child.id().context("nginx exited at once")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default();
            bail!("nginx did not start:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Nginx { child, port, pid })
}

/// Runs curl with `args`, returning the run time and curl's CPU.
async fn curl(bin: &str, args: &[String], server_pid: u32) -> anyhow::Result<Sample> {
    let server0 = process_runtime_ns(server_pid);
    let cpu0 = children_cpu_ns();
    let t = Instant::now();
    let out = tokio::process::Command::new(bin)
        .args(["-s", "-S", "--fail"])
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {bin}"))?;
    let seconds = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Sample {
        seconds,
        server_ns: process_runtime_ns(server_pid).saturating_sub(server0),
        client_ns: children_cpu_ns().saturating_sub(cpu0),
    })
}

/// Runs the bench.
pub async fn run(args: &AttachmentsBenchArgs) -> anyhow::Result<AttachmentsReport> {
    if args.mib == 0 || args.runs == 0 {
        bail!("--mib and --runs are at least 1");
    }
    let bin = match &args.umbra {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("umbra-bench-attachments-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    let file = www.join("file.bin");
    crate::note!("writing a {} MiB file", args.mib);
    make_file(&file, args.mib)?;

    crate::note!("starting nginx and umbra server");
    let mut nginx = start_nginx(&args.nginx, &dir, &www).await?;
    let data = dir.join("server");
    let mut server = start_server_with(
        &bin,
        &data,
        &dir.join("server.log"),
        &["--max-blob-bytes", &format!("{}", (args.mib + 64) << 20)],
    )
    .await?;
    let server_pid = server.child.id().context("umbra server exited")?;
    let invite = Invite::parse(&server.invite)?;
    let route = Route::Direct(invite.address());
    let me = std::process::id();
    let url = |path: &str| format!("http://127.0.0.1:{}/{path}", nginx.port);
    let copy = dir.join("copy.bin");

    let (mut umbra_up, mut umbra_down, mut direct_up, mut direct_down) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=args.runs {
        crate::note!("run {run} of {}: curl and nginx", args.runs);
        direct_up.push(
            curl(
                &args.curl,
                &[
                    "-T".into(),
                    file.to_string_lossy().into_owned(),
                    url(&format!("up/{run}.bin")),
                ],
                nginx.pid,
            )
            .await?,
        );
        let _ = std::fs::remove_file(www.join("up").join(format!("{run}.bin")));
        direct_down.push(
            curl(
                &args.curl,
                &[
                    "-o".into(),
                    copy.to_string_lossy().into_owned(),
                    url("file.bin"),
                ],
                nginx.pid,
            )
            .await?,
        );
        let _ = std::fs::remove_file(&copy);

        crate::note!("run {run} of {}: umbra", args.runs);
        let (s0, c0, t) = (
            process_runtime_ns(server_pid),
            process_runtime_ns(me),
            Instant::now(),
        );
        let up = transfer::upload(&invite, &route, &file, &mut |_, _| {}).await?;
        umbra_up.push(Sample {
            seconds: t.elapsed().as_secs_f64(),
            server_ns: process_runtime_ns(server_pid).saturating_sub(s0),
            client_ns: process_runtime_ns(me).saturating_sub(c0),
        });
        let (s0, c0, t) = (
            process_runtime_ns(server_pid),
            process_runtime_ns(me),
            Instant::now(),
        );
        transfer::download(&invite, &route, &up.blob, &copy, &mut |_, _| {}).await?;
        umbra_down.push(Sample {
            seconds: t.elapsed().as_secs_f64(),
            server_ns: process_runtime_ns(server_pid).saturating_sub(s0),
            client_ns: process_runtime_ns(me).saturating_sub(c0),
        });
        if std::fs::metadata(&copy)?.len() != args.mib << 20 {
            bail!("the downloaded copy is not the file's size");
        }
        let _ = std::fs::remove_file(&copy);
        // The blob goes, so runs do not fill the disk.
        for e in std::fs::read_dir(data.join("blobs").join("done"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = server.child.kill().await;
    let _ = nginx.child.kill().await;
    let leg = |umbra: Vec<Sample>, direct: Vec<Sample>, direction| {
        let umbra = median(umbra, args.mib);
        let direct = median(direct, args.mib);
        Direction {
            direction,
            ratio: umbra.mib_per_s / direct.mib_per_s,
            umbra,
            direct,
        }
    };
    Ok(AttachmentsReport {
        mib: args.mib,
        directions: vec![
            leg(umbra_up, direct_up, "upload"),
            leg(umbra_down, direct_down, "download"),
        ],
    })
}

impl fmt::Display for AttachmentsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} MiB file | Umbra MiB/s | curl+nginx MiB/s | ratio | server CPU ms/MiB (Umbra / nginx) | client CPU ms/MiB (Umbra / curl)",
            self.mib
        )?;
        for d in &self.directions {
            writeln!(
                f,
                "{:>13} | {:>11.0} | {:>16.0} | {:>4.0}% | {:>14.2} / {:<5.2} | {:>14.2} / {:<5.2}",
                d.direction,
                d.umbra.mib_per_s,
                d.direct.mib_per_s,
                d.ratio * 100.0,
                d.umbra.server_cpu_ms_per_mib,
                d.direct.server_cpu_ms_per_mib,
                d.umbra.client_cpu_ms_per_mib,
                d.direct.client_cpu_ms_per_mib,
            )?;
        }
        Ok(())
    }
}
