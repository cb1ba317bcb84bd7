//! Janus, the anchor of `umbra bench sfu --janus`: its VideoRoom plugin
//! (a selective forwarding unit, as Umbra's is) started from a scratch
//! directory with only the HTTP transport, on loopback, and the few calls
//! of its HTTP API a member makes: a session, a handle on the plugin per
//! peer connection, plugin messages with their SDP, and the long poll that
//! brings back the plugin's answers.
//!
//! Janus gathers ICE candidates only on interfaces that are not loopback,
//! so it runs inside the bench's own network namespace and is told the
//! one interface there to use ([`start`]).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::util::random_token;

/// How long one HTTP request may take (a long poll returns after at most
/// 30 s by itself).
const REQUEST_WITHIN: Duration = Duration::from_secs(40);

/// A running Janus.
pub(crate) struct Janus {
    child: Child,
    /// Its HTTP API.
    pub api: Api,
}

/// Janus's HTTP API on loopback.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    addr: SocketAddr,
}

/// One session of the API: a member's, with the events its handles got.
pub(crate) struct Session {
    api: Api,
    id: u64,
    pending: VecDeque<Value>,
}

impl Janus {
    /// The process id, for its CPU time.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("janus has exited")
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Starts `bin` with a configuration in `dir`: HTTP on a free loopback
/// port, the VideoRoom plugin alone, no session timeout, ICE on `iface`
/// (whose address is `ip`) and nothing else.
pub(crate) async fn start(bin: &str, dir: &Path, ip: IpAddr, iface: &str) -> anyhow::Result<Janus> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let lib = "/usr/lib/x86_64-linux-gnu/janus";
    let others = |kind: &str, keep: &str| -> String {
        std::fs::read_dir(format!("{lib}/{kind}"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".so") && n != keep)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let dirs = dir.display();
    std::fs::write(
        dir.join("janus.jcfg"),
        format!(
            "general: {{\n configs_folder = \"{dirs}\"\n plugins_folder = \"{lib}/plugins\"\n \
             transports_folder = \"{lib}/transports\"\n events_folder = \"{lib}/events\"\n \
             loggers_folder = \"{lib}/loggers\"\n debug_level = 2\n session_timeout = 0\n \
             interface = \"{ip}\"\n}}\nmedia: {{\n rtp_port_range = \"20000-60000\"\n}}\n\
             nat: {{\n ice_enforce_list = \"{iface}\"\n}}\nplugins: {{\n disable = \"{}\"\n}}\n\
             transports: {{\n disable = \"{}\"\n}}\nloggers: {{\n disable = \"{}\"\n}}\n\
             events: {{\n broadcast = false\n}}\n",
            others("plugins", "libjanus_videoroom.so"),
            others("transports", "libjanus_http.so"),
            others("loggers", ""),
        ),
    )?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n json = \"compact\"\n base_path = \"/janus\"\n http = true\n \
             port = {port}\n ip = \"127.0.0.1\"\n https = false\n}}\nadmin: {{\n \
             admin_http = false\n}}\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join("janus.log"))?;
    let child = Command::new(bin)
        .arg("-F")
        .arg(dir)
        .arg("-C")
        .arg(dir.join("janus.jcfg"))
        .arg("-o")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("starting {bin} (Debian package `janus`: apt-get install janus)")
        })?;
    let janus = Janus {
        child,
        api: Api {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        },
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(info) = janus.api.request(Method::GET, "/janus/info", None).await
            && info["janus"] == "server_info"
        {
            return Ok(janus);
        }
        if tokio::time::Instant::now() >= deadline {
            let log = std::fs::read_to_string(dir.join("janus.log")).unwrap_or_default();
            bail!("janus did not answer on its HTTP API within 20 s:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Api {
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let exchange = async {
            let stream = TcpStream::connect(self.addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let bytes = body.map(|b| b.to_string()).unwrap_or_default();
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, "127.0.0.1")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(bytes)))?;
            let response = sender.send_request(request).await?;
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(serde_json::from_slice::<Value>(&body)?)
        };
        let answer = tokio::time::timeout(REQUEST_WITHIN, exchange)
            .await
            .with_context(|| format!("janus did not answer {path} in time"))??;
        if answer["janus"] == "error" {
            bail!("janus refused {path}: {}", answer["error"]);
        }
        Ok(answer)
    }

    /// Posts a request (a transaction id added) and returns the answer.
    async fn post(&self, path: &str, mut body: Value) -> anyhow::Result<Value> {
        body["transaction"] = Value::String(random_token());
        self.request(Method::POST, path, Some(&body)).await
    }

    /// A new session.
    pub async fn session(&self) -> anyhow::Result<Session> {
        let answer = self.post("/janus", json!({"janus": "create"})).await?;
        let id = answer["data"]["id"]
            .as_u64()
            .context("janus gave no session id")?;
        Ok(Session {
            api: self.clone(),
            id,
            pending: VecDeque::new(),
        })
    }
}

impl Session {
    /// A handle on the VideoRoom plugin (one per peer connection).
    pub async fn attach(&self) -> anyhow::Result<u64> {
        let answer = self
            .api
            .post(
                &format!("/janus/{}", self.id),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        answer["data"]["id"]
            .as_u64()
            .context("janus gave no handle id")
    }

    /// A message to the plugin on `handle`, with an SDP when there is one.
    /// Returns what the plugin answered at once (a room request), or the
    /// acknowledgement of a request whose answer comes as an event.
    pub async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut m = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        let answer = self
            .api
            .post(&format!("/janus/{}/{handle}", self.id), m)
            .await?;
        if let Some(e) = answer["plugindata"]["data"]["error"].as_str() {
            bail!("the video room refused a request: {e}");
        }
        Ok(answer)
    }

    /// Waits for the plugin's event on `handle` that `wanted` picks (others
    /// are kept for later waits); a plugin error fails it.
    pub async fn event(
        &mut self,
        handle: u64,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self
                .pending
                .iter()
                .position(|e| e["sender"].as_u64() == Some(handle) && wanted(e))
            {
                return Ok(self.pending.remove(i).unwrap_or_default());
            }
            if let Some(e) = self.pending.iter().find(|e| {
                e["sender"].as_u64() == Some(handle) && e["plugindata"]["data"]["error"].is_string()
            }) {
                bail!(
                    "the video room refused a request: {}",
                    e["plugindata"]["data"]["error"]
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("janus sent no answer within {} s", within.as_secs());
            }
            let got = self
                .api
                .request(Method::GET, &format!("/janus/{}?maxev=20", self.id), None)
                .await?;
            match got {
                Value::Array(events) => self.pending.extend(events),
                e if e["janus"] == "keepalive" => {}
                e => self.pending.push_back(e),
            }
        }
    }

    /// Drops the events kept for `handle` (a refused request's).
    pub fn forget(&mut self, handle: u64) {
        self.pending
            .retain(|e| e["sender"].as_u64() != Some(handle));
    }

    /// Ends the session (and its handles' peer connections).
    pub async fn destroy(self) {
        let _ = self
            .api
            .post(&format!("/janus/{}", self.id), json!({"janus": "destroy"}))
            .await;
    }
}
