//! A connection to the messaging server.
//!
//! Each connection has a fresh Noise static key, so the server cannot link
//! connections by key. Sending is done anonymously; receiving needs a
//! [`ServerConn::login`] that proves possession of the device identity key by
//! signing this channel's handshake hash.

use std::collections::VecDeque;
use std::time::Duration;

use umbra_net::Channel;
use umbra_net::dial::Route;
use umbra_wire::invite::Invite;
use umbra_wire::noise::Keypair;
use umbra_wire::proto::{
    ClientFrame, Deliver, Devices, ErrorCode, FetchDevices, ServerFrame, ServerHello, client_frame,
    server_frame,
};
use umbra_wire::proxy::Target;

use crate::ClientError;

const TIMEOUT: Duration = Duration::from_secs(15);

/// An open, encrypted connection.
pub struct ServerConn {
    ch: Channel,
    next_id: u64,
    pushes: VecDeque<server_frame::Body>,
    hello: ServerHello,
}

impl ServerConn {
    /// Connects to the server named in `invite`, pinning its key, along
    /// `route` (directly, or through a proxy).
    pub async fn open(invite: &Invite, route: &Route) -> Result<Self, ClientError> {
        let stream = match umbra_net::dial::dial(route, Target::Messaging, TIMEOUT).await {
            Ok(s) => s,
            Err(umbra_net::NetError::Io(cause)) => {
                return Err(ClientError::Unreachable {
                    addr: describe(route),
                    cause,
                });
            }
            Err(umbra_net::NetError::Timeout(_)) => {
                return Err(ClientError::Unreachable {
                    addr: describe(route),
                    cause: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let local = Keypair::generate().map_err(umbra_net::NetError::from)?;
        let (ch, hello) = umbra_net::connect(stream, &local, &invite.server_key, TIMEOUT).await?;
        Ok(Self {
            ch,
            next_id: 1,
            pushes: VecDeque::new(),
            hello,
        })
    }

    /// What the server announced.
    pub fn hello(&self) -> &ServerHello {
        &self.hello
    }

    /// This channel's handshake hash (what logins sign).
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.ch.handshake_hash
    }

    fn frame(&mut self, body: client_frame::Body) -> (u64, ClientFrame) {
        let id = self.next_id;
        self.next_id += 1;
        (
            id,
            ClientFrame {
                request_id: id,
                body: Some(body),
            },
        )
    }

    /// Sends a request and waits for its answer. Pushes that arrive meanwhile
    /// are kept for [`ServerConn::next_push`]. A server error becomes
    /// [`ClientError::Server`].
    pub async fn call(
        &mut self,
        body: client_frame::Body,
    ) -> Result<server_frame::Body, ClientError> {
        let (id, frame) = self.frame(body);
        self.ch.writer.send(&frame).await?;
        self.wait_for(id).await
    }

    /// Sends many requests at once (pipelined) and returns their answers in
    /// the order of the requests. The server may answer them in another
    /// order (a request it refuses at once overtakes earlier ones waiting
    /// for storage): each answer is matched by its request id.
    pub async fn call_many(
        &mut self,
        bodies: Vec<client_frame::Body>,
    ) -> Result<Vec<Result<server_frame::Body, ClientError>>, ClientError> {
        let mut waiting = std::collections::HashMap::with_capacity(bodies.len());
        for (i, body) in bodies.into_iter().enumerate() {
            let (id, frame) = self.frame(body);
            self.ch.writer.queue(&frame)?;
            waiting.insert(id, i);
        }
        self.ch.writer.flush().await?;
        let mut out: Vec<Option<Result<server_frame::Body, ClientError>>> =
            (0..waiting.len()).map(|_| None).collect();
        while !waiting.is_empty() {
            let Some((id, answer)) = self.next_answer().await? else {
                continue;
            };
            let i = waiting.remove(&id).ok_or_else(|| {
                ClientError::Protocol(format!("answer to request {id}, which was not asked"))
            })?;
            out[i] = Some(answer);
        }
        Ok(out
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(ClientError::Protocol("no answer".into()))))
            .collect())
    }

    /// Queues a request without waiting for its answer (sent at the next
    /// [`ServerConn::flush`]); the answer comes from
    /// [`ServerConn::next_reply`]. For a window of requests kept in flight.
    pub fn queue(&mut self, body: client_frame::Body) -> Result<u64, ClientError> {
        let (id, frame) = self.frame(body);
        self.ch.writer.queue(&frame)?;
        Ok(id)
    }

    /// Sends what [`ServerConn::queue`] queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.ch.writer.flush().await?)
    }

    /// The next answer to a queued request: its id, and the body or the
    /// server's error. Pushes meanwhile are kept for
    /// [`ServerConn::next_push`].
    pub async fn next_reply(
        &mut self,
    ) -> Result<(u64, Result<server_frame::Body, ClientError>), ClientError> {
        loop {
            if let Some(answer) = self.next_answer().await? {
                return Ok(answer);
            }
        }
    }

    async fn wait_for(&mut self, id: u64) -> Result<server_frame::Body, ClientError> {
        loop {
            let Some((got, answer)) = self.next_answer().await? else {
                continue;
            };
            if got != id {
                return Err(ClientError::Protocol(format!(
                    "answer to request {got} while waiting for {id}"
                )));
            }
            return answer;
        }
    }

    /// The next frame: an answer (its request id, and the body or the
    /// server's error), or `None` for a push, which is kept for
    /// [`ServerConn::next_push`].
    async fn next_answer(
        &mut self,
    ) -> Result<Option<(u64, Result<server_frame::Body, ClientError>)>, ClientError> {
        let frame = self.recv_frame().await?;
        if frame.request_id == 0 {
            if let Some(body) = frame.body {
                self.pushes.push_back(body);
            }
            return Ok(None);
        }
        let answer = match frame.body {
            Some(server_frame::Body::Error(e)) => Err(ClientError::Server {
                code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
                message: e.message,
            }),
            Some(body) => Ok(body),
            None => Err(ClientError::Protocol("empty answer".into())),
        };
        Ok(Some((frame.request_id, answer)))
    }

    async fn recv_frame(&mut self) -> Result<ServerFrame, ClientError> {
        self.ch
            .reader
            .recv::<ServerFrame>()
            .await?
            .ok_or(ClientError::Net(umbra_net::NetError::Closed))
    }

    /// The next push (Deliver or QueueDrained); `None` if the server closed.
    pub async fn next_push(&mut self) -> Result<Option<server_frame::Body>, ClientError> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(Some(p));
        }
        loop {
            match self.ch.reader.recv::<ServerFrame>().await? {
                None => return Ok(None),
                Some(f) if f.request_id == 0 => {
                    if let Some(body) = f.body {
                        return Ok(Some(body));
                    }
                }
                // Answers to acks sent without waiting.
                Some(_) => {}
            }
        }
    }

    /// Looks a user's devices up (anonymous), claiming a key package per
    /// device when `claim` names ciphersuites (code points, preferred
    /// first: all packages are of the first suite every device has). An
    /// unknown user is [`ClientError::UnknownUser`].
    pub async fn fetch_devices(
        &mut self,
        username: &str,
        claim: &[u16],
    ) -> Result<Devices, ClientError> {
        let body = client_frame::Body::FetchDevices(FetchDevices {
            username: username.to_string(),
            claim_key_packages: !claim.is_empty(),
            suites: claim.iter().map(|&s| u32::from(s)).collect(),
        });
        match self.call(body).await {
            Ok(server_frame::Body::Devices(d)) => Ok(d),
            Ok(other) => Err(ClientError::Protocol(format!("{other:?}"))),
            Err(ClientError::Server { code, message }) => {
                Err(ClientError::from_server(code, message, Some(username)))
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a ping without waiting for its pong (keeps the path warm).
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        let (_, frame) = self.frame(client_frame::Body::Ping(umbra_wire::proto::Ping {
            nonce: 0,
        }));
        self.ch.writer.send(&frame).await?;
        Ok(())
    }

    /// Acknowledges delivered envelopes without waiting for the answer.
    pub async fn ack(&mut self, envelope_ids: Vec<u64>) -> Result<(), ClientError> {
        if envelope_ids.is_empty() {
            return Ok(());
        }
        let (_, frame) = self.frame(client_frame::Body::Ack(umbra_wire::proto::Ack {
            envelope_ids,
        }));
        self.ch.writer.send(&frame).await?;
        Ok(())
    }

    /// Acknowledges delivered envelopes and waits until the server has
    /// deleted them.
    pub async fn ack_confirmed(&mut self, envelope_ids: Vec<u64>) -> Result<(), ClientError> {
        if envelope_ids.is_empty() {
            return Ok(());
        }
        let body = client_frame::Body::Ack(umbra_wire::proto::Ack { envelope_ids });
        match self.call(body).await? {
            server_frame::Body::Acked(_) => Ok(()),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ch.writer.shutdown().await;
    }
}

/// A delivered envelope.
pub type Delivered = Deliver;

fn describe(route: &Route) -> String {
    match route {
        Route::Direct(addr) => addr.clone(),
        Route::Proxy(link) => format!("{} (your proxy)", link.address()),
    }
}
