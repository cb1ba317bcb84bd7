//! Test helpers: a server on 127.0.0.1:0 with a temporary data directory, and
//! a raw protocol client built on `umbra_net::connect`.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use umbra_net::{FrameReader, FrameWriter};
use umbra_server::{Server, ServerConfig};
use umbra_wire::invite::Invite;
use umbra_wire::noise::Keypair;
use umbra_wire::proto::{
    self, ClientFrame, ErrorCode, ServerFrame, client_frame::Body as Req,
    server_frame::Body as Resp,
};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Running {
    pub invite: Invite,
    pub metrics_addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.join.take() {
            tokio::time::timeout(Duration::from_secs(30), j)
                .await
                .expect("server stops in time")
                .expect("join")
                .expect("server ran cleanly");
        }
    }
}

pub fn config(dir: &Path) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..ServerConfig::default()
    }
}

pub async fn start(config: ServerConfig) -> Running {
    let server = Server::bind(config).await.expect("bind");
    let invite = server.invite().clone();
    let metrics_addr = server.metrics_addr().expect("metrics addr");
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Running {
        invite,
        metrics_addr,
        stop: Some(tx),
        join: Some(join),
    }
}

pub struct Client {
    pub reader: FrameReader,
    pub writer: FrameWriter,
    pub hash: [u8; 32],
    next_id: u64,
    pub pushes: Vec<ServerFrame>,
}

pub struct Account {
    pub username: String,
    pub key: SigningKey,
    /// The account key: signs the device lists.
    pub account: SigningKey,
    /// The device keys of the account's list.
    pub device: proto::DeviceKeys,
    pub device_id: Vec<u8>,
    pub mailbox_id: Vec<u8>,
    pub token: Vec<u8>,
}

/// `devices` at `version`, signed by `account`.
pub fn device_list(
    account: &SigningKey,
    username: &str,
    version: u64,
    devices: Vec<proto::DeviceKeys>,
) -> proto::SignedDeviceList {
    let list = proto::DeviceList {
        username: username.to_string(),
        account_key: account.verifying_key().to_bytes().to_vec(),
        version,
        devices,
    };
    umbra_wire::devices::sign_list(&list, |m| {
        Ok::<_, std::convert::Infallible>(account.sign(m).to_bytes().to_vec())
    })
    .unwrap_or_else(|never| match never {})
}

impl Client {
    pub async fn connect(invite: &Invite) -> Client {
        let stream = TcpStream::connect(invite.address()).await.expect("tcp");
        let me = Keypair::generate().expect("key");
        let (ch, hello) = umbra_net::connect(stream, &me, &invite.server_key, TIMEOUT)
            .await
            .expect("handshake");
        assert_eq!(hello.protocol_version, 1);
        Client {
            reader: ch.reader,
            writer: ch.writer,
            hash: ch.handshake_hash,
            next_id: 1,
            pushes: Vec::new(),
        }
    }

    pub async fn send(&mut self, body: Req) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.writer
            .send(&ClientFrame {
                request_id: id,
                body: Some(body),
            })
            .await
            .expect("send");
        id
    }

    /// Next frame from the server (None when closed).
    pub async fn recv(&mut self) -> Option<ServerFrame> {
        tokio::time::timeout(TIMEOUT, self.reader.recv::<ServerFrame>())
            .await
            .expect("server answers in time")
            .ok()
            .flatten()
    }

    /// Sends a request and returns its reply body, keeping pushes aside.
    pub async fn call(&mut self, body: Req) -> Resp {
        let id = self.send(body).await;
        loop {
            let f = self.recv().await.expect("reply before close");
            if f.request_id == id {
                return f.body.expect("body");
            }
            assert_eq!(f.request_id, 0, "unexpected reply id");
            self.pushes.push(f);
        }
    }

    pub async fn register(&mut self, username: &str) -> Account {
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let key = SigningKey::from_bytes(&seed);
        let identity = key.verifying_key().to_bytes();
        let sealing = [9u8; 32];
        let mut token = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut token);
        let mut msg = b"umbra-register-v1".to_vec();
        msg.extend_from_slice(&self.hash);
        msg.extend_from_slice(username.as_bytes());
        msg.extend_from_slice(&identity);
        msg.extend_from_slice(&sealing);
        let sig = key.sign(&msg).to_bytes().to_vec();
        let mut account_seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut account_seed);
        let account = SigningKey::from_bytes(&account_seed);
        let device = proto::DeviceKeys {
            identity_key: identity.to_vec(),
            sealing_key: sealing.to_vec(),
        };
        let device_list = device_list(&account, username, 1, vec![device.clone()]);
        let resp = self
            .call(Req::Register(proto::Register {
                username: username.to_string(),
                device: Some(device.clone()),
                signature: sig,
                delivery_token_hash: Sha256::digest(&token).to_vec(),
                device_list: Some(device_list),
            }))
            .await;
        let Resp::Registered(r) = resp else {
            panic!("register failed: {resp:?}")
        };
        assert_eq!(r.device_id.len(), 16);
        assert_eq!(r.mailbox_id.len(), 16);
        Account {
            username: username.to_string(),
            key,
            account,
            device,
            device_id: r.device_id,
            mailbox_id: r.mailbox_id,
            token,
        }
    }

    pub fn login_signature(&self, key: &SigningKey) -> Vec<u8> {
        let mut msg = b"umbra-login-v1".to_vec();
        msg.extend_from_slice(&self.hash);
        key.sign(&msg).to_bytes().to_vec()
    }

    /// Logs in; returns LoggedIn and the envelopes pushed before QueueDrained.
    pub async fn login(&mut self, acct: &Account) -> (proto::LoggedIn, Vec<proto::Deliver>) {
        let sig = self.login_signature(&acct.key);
        let resp = self
            .call(Req::Login(proto::Login {
                device_id: acct.device_id.clone(),
                signature: sig,
                signalling: false,
            }))
            .await;
        let Resp::LoggedIn(li) = resp else {
            panic!("login failed: {resp:?}")
        };
        let mut got = Vec::new();
        loop {
            let f = self.recv().await.expect("frame");
            match f.body {
                Some(Resp::Deliver(d)) => got.push(d),
                Some(Resp::QueueDrained(_)) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        (li, got)
    }

    pub async fn send_envelope(&mut self, mailbox: &[u8], token: &[u8], sealed: &[u8]) -> Resp {
        self.call(Req::Send(proto::SendEnvelope {
            mailbox_id: mailbox.to_vec(),
            delivery_token: token.to_vec(),
            sealed: sealed.to_vec(),
            online_only: false,
        }))
        .await
    }

    /// The next pushed envelope (waiting for it).
    pub async fn next_delivery(&mut self) -> proto::Deliver {
        if let Some(pos) = self
            .pushes
            .iter()
            .position(|f| matches!(f.body, Some(Resp::Deliver(_))))
            && let Some(Resp::Deliver(d)) = self.pushes.remove(pos).body
        {
            return d;
        }
        loop {
            let f = self.recv().await.expect("frame");
            if let Some(Resp::Deliver(d)) = f.body {
                return d;
            }
        }
    }
}

pub fn error_code(resp: &Resp) -> Option<ErrorCode> {
    match resp {
        Resp::Error(e) => ErrorCode::try_from(e.code).ok(),
        _ => None,
    }
}

pub fn is_accepted(resp: &Resp) -> bool {
    matches!(resp, Resp::Accepted(_))
}
