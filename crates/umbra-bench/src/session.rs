//! A minimal protocol client: connect, register, log in.

use std::time::Duration;

use anyhow::{Context, bail};
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use umbra_net::{FrameReader, FrameWriter};
use umbra_wire::invite::Invite;
use umbra_wire::noise::Keypair;
use umbra_wire::proto::{
    self, ClientFrame, ServerFrame, client_frame::Body as Req, server_frame::Body as Resp,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// An established session.
pub struct Session {
    /// Incoming frames.
    pub reader: FrameReader,
    /// Outgoing frames.
    pub writer: FrameWriter,
    hash: [u8; 32],
    next_id: u64,
}

/// A registered device.
#[derive(Debug, Clone)]
pub struct Account {
    /// Device id.
    pub device_id: Vec<u8>,
    /// Mailbox id.
    pub mailbox_id: Vec<u8>,
    /// Delivery token.
    pub token: Vec<u8>,
    key: SigningKey,
}

impl Session {
    /// Connects (with a fresh anonymous static key) to the invite's address.
    pub async fn connect(invite: &Invite) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(invite.address()))
            .await
            .context("connect timed out")??;
        stream.set_nodelay(true)?;
        let me = Keypair::generate()?;
        let (ch, _) = umbra_net::connect(stream, &me, &invite.server_key, TIMEOUT).await?;
        Ok(Self {
            reader: ch.reader,
            writer: ch.writer,
            hash: ch.handshake_hash,
            next_id: 1,
        })
    }

    /// A request-id counter for a session whose halves were split.
    pub fn id_source() -> impl FnMut() -> u64 {
        let mut next = 0u64;
        move || {
            next += 1;
            next
        }
    }

    /// The next request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues a request without flushing; returns its id.
    pub fn queue(&mut self, body: Req) -> anyhow::Result<u64> {
        let id = self.next_id();
        self.writer.queue(&ClientFrame {
            request_id: id,
            body: Some(body),
        })?;
        Ok(id)
    }

    async fn recv(&mut self) -> anyhow::Result<ServerFrame> {
        tokio::time::timeout(TIMEOUT, self.reader.recv::<ServerFrame>())
            .await
            .context("server did not answer in time")??
            .context("server closed the connection")
    }

    async fn call(&mut self, body: Req) -> anyhow::Result<Resp> {
        let id = self.queue(body)?;
        self.writer.flush().await?;
        loop {
            let f = self.recv().await?;
            if f.request_id == id {
                return f.body.context("empty reply");
            }
        }
    }

    /// Registers a random username with fresh keys.
    pub async fn register(&mut self) -> anyhow::Result<Account> {
        let mut rng = rand::rngs::OsRng;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let key = SigningKey::from_bytes(&seed);
        let identity = key.verifying_key().to_bytes();
        let mut sealing = [0u8; 32];
        rng.fill_bytes(&mut sealing);
        let mut token = vec![0u8; 32];
        rng.fill_bytes(&mut token);
        let mut name = [0u8; 8];
        rng.fill_bytes(&mut name);
        let username = format!("bench-{}", hex_lower(&name));
        let mut msg = b"umbra-register-v1".to_vec();
        msg.extend_from_slice(&self.hash);
        msg.extend_from_slice(username.as_bytes());
        msg.extend_from_slice(&identity);
        msg.extend_from_slice(&sealing);
        let device = proto::DeviceKeys {
            identity_key: identity.to_vec(),
            sealing_key: sealing.to_vec(),
        };
        // A load tool's account: its one device key also stands as the
        // account key that signs the device list.
        let list = proto::DeviceList {
            username: username.clone(),
            account_key: identity.to_vec(),
            version: 1,
            devices: vec![device.clone()],
        };
        let device_list = umbra_wire::devices::sign_list(&list, |m| {
            Ok::<_, std::convert::Infallible>(key.sign(m).to_bytes().to_vec())
        })
        .unwrap_or_else(|never| match never {});
        let resp = self
            .call(Req::Register(proto::Register {
                username,
                device: Some(device),
                signature: key.sign(&msg).to_bytes().to_vec(),
                delivery_token_hash: Sha256::digest(&token).to_vec(),
                device_list: Some(device_list),
            }))
            .await?;
        match resp {
            Resp::Registered(r) => Ok(Account {
                device_id: r.device_id,
                mailbox_id: r.mailbox_id,
                token,
                key,
            }),
            other => bail!("registration refused: {other:?}"),
        }
    }

    /// Logs in and waits for QueueDrained (any backlog is acked).
    pub async fn login(&mut self, acct: &Account) -> anyhow::Result<()> {
        let mut msg = b"umbra-login-v1".to_vec();
        msg.extend_from_slice(&self.hash);
        let resp = self
            .call(Req::Login(proto::Login {
                device_id: acct.device_id.clone(),
                signature: acct.key.sign(&msg).to_bytes().to_vec(),
                signalling: false,
            }))
            .await?;
        if !matches!(resp, Resp::LoggedIn(_)) {
            bail!("login refused: {resp:?}");
        }
        let mut backlog = Vec::new();
        loop {
            match self.recv().await?.body {
                Some(Resp::QueueDrained(_)) => break,
                Some(Resp::Deliver(d)) => backlog.push(d.envelope_id),
                _ => {}
            }
        }
        if !backlog.is_empty() {
            self.call(Req::Ack(proto::Ack {
                envelope_ids: backlog,
            }))
            .await?;
        }
        Ok(())
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
