//! One client connection: handshake, then a loop over client frames, replies
//! and pushes.
//!
//! The loop waits on four things: the next frame (while fewer than
//! [`MAX_IN_FLIGHT`] requests await storage), the oldest pending reply, the
//! inbox (when logged in) and shutdown. Replies are written in request order
//! within each kind; frames are queued and flushed only when nothing else is
//! ready, so a busy connection writes many frames per syscall. Whatever an
//! idle connection keeps is small: the request handlers run in boxed futures.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use umbra_net::{FrameReader, FrameWriter, NetError};
use umbra_wire::noise::Keypair;
use umbra_wire::proto::{ClientFrame, ErrorCode, ServerFrame, ServerHello, server_frame::Body};

use crate::error::error_frame;
use crate::metrics::inc;
use crate::routing::{Inbox, Session};
use crate::shared::Shared;
use crate::storage::StorageHandle;

/// Most requests of one connection waiting for storage before it stops reading.
pub const MAX_IN_FLIGHT: usize = 256;
/// Flush early when this much is queued.
pub(crate) const FLUSH_AT: usize = 256 * 1024;
/// How long a main session lets a signalling session of its device (on
/// another node) take an online-only envelope first.
const LIVE_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// A reply that will be ready after storage answers.
pub(crate) type PendingReply = Pin<Box<dyn Future<Output = ServerFrame> + Send>>;

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("storage unavailable")]
    Storage,
    #[error("superseded by a later login of the device")]
    Superseded,
}

/// The device a connection is logged in as.
pub(crate) struct LoginState {
    pub(crate) device_id: [u8; 16],
    /// The device's account and identity key (a business card must name
    /// both).
    pub(crate) username: String,
    pub(crate) identity_key: [u8; 32],
    pub(crate) mailbox_id: [u8; 16],
    pub(crate) inbox: Arc<Inbox>,
    /// Main or signalling session.
    pub(crate) session: Session,
    /// The main session's number (0 for a signalling session).
    pub(crate) epoch: u64,
    /// What the other nodes say of this mailbox, when this node is one of
    /// several.
    pub(crate) bus: Option<async_nats::Subscriber>,
    /// Highest envelope id delivered on this connection.
    pub(crate) cursor: u64,
}

/// What a connection needs from the server.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) storage: StorageHandle,
    pub(crate) key: Keypair,
    pub(crate) handshake_timeout: std::time::Duration,
}

/// A connection after its handshake.
pub(crate) struct Conn {
    pub(crate) reader: FrameReader,
    pub(crate) writer: FrameWriter,
    pub(crate) handshake_hash: [u8; 32],
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) login: Option<Box<LoginState>>,
    pub(crate) pending: VecDeque<PendingReply>,
    pub(crate) idle: Option<Pin<Box<Sleep>>>,
}

enum Event {
    Frame(Result<Option<ClientFrame>, NetError>),
    Reply(ServerFrame),
    Inbox,
    Bus(Option<async_nats::Message>),
    Idle,
    Shutdown,
}

/// What to do after handling an event.
pub(crate) enum Flow {
    Continue,
    Close,
}

/// Serves one accepted socket until it closes or the server shuts down.
///
/// What a connection's task keeps while the client is idle is this
/// future: the handshake (snow's state, a few KiB) runs boxed and is freed
/// when it ends, so the task holds only the connection and its loop.
pub(crate) async fn serve(stream: TcpStream, ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let Some(mut conn) = Box::pin(handshake(stream, ctx)).await else {
        return;
    };
    let result = conn.run(&mut shutdown).await;
    if let Err(e) = &result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    if let Some(login) = conn.login.take() {
        conn.ctx
            .shared
            .registry
            .unregister(&login.mailbox_id, login.session, &login.inbox);
    }
}

/// The server's side of the handshake; the connection, unless the
/// handshake failed or the client speaks another version (told so).
async fn handshake(stream: TcpStream, ctx: Arc<Ctx>) -> Option<Conn> {
    let limits = ctx.shared.limits;
    let hello = ServerHello {
        protocol_version: umbra_wire::PROTOCOL_VERSION,
        max_frame_bytes: limits.max_frame_bytes,
        max_envelope_bytes: limits.max_envelope_bytes,
        padding: Vec::new(),
    };
    let mut client_version = 0;
    let accepted = umbra_net::accept(stream, &ctx.key, ctx.handshake_timeout, |h| {
        client_version = h.protocol_version;
        hello
    })
    .await;
    let channel = match accepted {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            return None;
        }
    };
    let mut conn = Conn {
        reader: channel.reader,
        writer: channel.writer,
        handshake_hash: channel.handshake_hash,
        ctx,
        login: None,
        pending: VecDeque::new(),
        idle: Some(Box::pin(tokio::time::sleep(limits.idle_timeout))),
    };
    if client_version != umbra_wire::PROTOCOL_VERSION {
        let f = error_frame(
            0,
            ErrorCode::UnsupportedVersion,
            format!(
                "this server speaks protocol version {}",
                umbra_wire::PROTOCOL_VERSION
            ),
        );
        let _ = conn.writer.send(&f).await;
        let _ = conn.writer.shutdown().await;
        return None;
    }
    Some(conn)
}

/// Completes the handshake only to say BUSY (connection cap reached), then closes.
pub(crate) async fn refuse_busy(stream: TcpStream, ctx: &Ctx) {
    let limits = ctx.shared.limits;
    let hello = ServerHello {
        protocol_version: umbra_wire::PROTOCOL_VERSION,
        max_frame_bytes: limits.max_frame_bytes,
        max_envelope_bytes: limits.max_envelope_bytes,
        padding: Vec::new(),
    };
    let timeout = ctx.handshake_timeout.min(std::time::Duration::from_secs(2));
    if let Ok(mut ch) = Box::pin(umbra_net::accept(stream, &ctx.key, timeout, |_| hello)).await {
        let f = error_frame(
            0,
            ErrorCode::Busy,
            "the server is at its connection limit".into(),
        );
        let _ = ch.writer.send(&f).await;
        let _ = ch.writer.shutdown().await;
    }
}

impl Conn {
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ConnError> {
        loop {
            let event = if self.writer.queued() > 0 {
                tokio::select! {
                    biased;
                    ev = self.next_event(shutdown) => ev,
                    () = std::future::ready(()) => {
                        self.writer.flush().await?;
                        continue;
                    }
                }
            } else {
                self.next_event(shutdown).await
            };
            let flow = match event {
                Event::Frame(Ok(Some(frame))) => {
                    if let Some(idle) = self.idle.as_mut() {
                        let at = Instant::now() + self.ctx.shared.limits.idle_timeout;
                        idle.as_mut().reset(at);
                    }
                    Box::pin(self.on_frame(frame)).await?
                }
                Event::Frame(Ok(None)) => Flow::Close,
                Event::Frame(Err(e)) => self.on_bad_frame(e).await?,
                Event::Reply(frame) => {
                    self.writer.queue(&frame)?;
                    Flow::Continue
                }
                Event::Inbox => Box::pin(self.on_inbox()).await?,
                Event::Bus(heard) => Box::pin(self.on_bus(heard)).await?,
                Event::Idle => Flow::Close,
                Event::Shutdown => {
                    self.finish_pending().await?;
                    Flow::Close
                }
            };
            if self.writer.queued() >= FLUSH_AT {
                self.writer.flush().await?;
            }
            if let Flow::Close = flow {
                let _ = self.writer.shutdown().await;
                return Ok(());
            }
        }
    }

    async fn next_event(&mut self, shutdown: &mut watch::Receiver<bool>) -> Event {
        let can_read = self.pending.len() < MAX_IN_FLIGHT;
        let inbox = self.login.as_ref().map(|l| l.inbox.clone());
        let bus = self.login.as_mut().and_then(|l| l.bus.as_mut());
        tokio::select! {
            biased;
            _ = shutdown.changed() => Event::Shutdown,
            frame = next_reply(&mut self.pending), if !self.pending.is_empty() => Event::Reply(frame),
            () = wait_inbox(inbox.as_deref()) => Event::Inbox,
            heard = next_heard(bus) => Event::Bus(heard),
            frame = self.reader.recv::<ClientFrame>(), if can_read => Event::Frame(frame),
            () = wait_idle(&mut self.idle) => Event::Idle,
        }
    }

    async fn on_bad_frame(&mut self, e: NetError) -> Result<Flow, ConnError> {
        match e {
            NetError::Wire(w) => {
                inc(&self.ctx.shared.metrics.frames_rejected);
                let message = match w {
                    umbra_wire::WireError::FrameTooLarge { .. } => "frame exceeds the size limit",
                    umbra_wire::WireError::Malformed(_) => "malformed frame",
                    _ => "unreadable data on the channel",
                };
                let f = error_frame(0, ErrorCode::Protocol, message.to_string());
                self.writer.queue(&f)?;
                self.writer.flush().await?;
                Ok(Flow::Close)
            }
            other => Err(other.into()),
        }
    }

    async fn on_inbox(&mut self) -> Result<Flow, ConnError> {
        let Some(login) = self.login.as_ref() else {
            return Ok(Flow::Continue);
        };
        let taken = login.inbox.take();
        if taken.replaced {
            return Ok(Flow::Close);
        }
        for p in taken.pushes {
            if p.live {
                self.deliver_live(p.sealed, p.introduction)?;
                continue;
            }
            if self.ctx.shared.shared_database && self.skips_ahead(p.id) {
                // Another node stored what lies between (its wake-up may
                // still be on its way): read it first, in order; the push
                // itself is then among what was read.
                self.drain_backlog().await?;
            }
            self.deliver(p.id, p.sealed, p.introduction)?;
            if self.writer.queued() >= FLUSH_AT {
                self.writer.flush().await?;
            }
        }
        if taken.overflowed {
            self.drain_backlog().await?;
        }
        if taken.live {
            self.take_live().await?;
        }
        Ok(Flow::Continue)
    }

    /// Delivers the online-only envelopes the shared database holds for
    /// this connection's device (each is taken by one connection only).
    pub(crate) async fn take_live(&mut self) -> Result<(), ConnError> {
        let Some(login) = self.login.as_ref() else {
            return Ok(());
        };
        let mailbox_id = login.mailbox_id;
        let taken = self
            .ctx
            .storage
            .call(|reply| crate::storage::Command::TakeLive { mailbox_id, reply })
            .await
            .map_err(|_| ConnError::Storage)?;
        for l in taken {
            inc(&self.ctx.shared.metrics.live_delivered);
            self.deliver_live(l.sealed, l.introduction)?;
        }
        self.writer.flush().await?;
        Ok(())
    }

    /// What the other nodes said of this mailbox: something was stored (read
    /// the mailbox), or a later main session of the device started (close).
    async fn on_bus(&mut self, heard: Option<async_nats::Message>) -> Result<Flow, ConnError> {
        let Some(login) = self.login.as_mut() else {
            return Ok(Flow::Continue);
        };
        let Some(msg) = heard else {
            // The subscription ended with the bus: the sweep and the
            // reconnection's wake carry on.
            login.bus = None;
            return Ok(Flow::Continue);
        };
        let heard = crate::cluster::parse(&msg.payload);
        if heard == Some(crate::cluster::Heard::Live) {
            inc(&self.ctx.shared.metrics.bus_wakes);
            let signalling_here = self.ctx.shared.registry.has_signalling(&login.mailbox_id);
            match login.session {
                Session::Signalling => self.take_live().await?,
                // A signalling session here takes it; one elsewhere is given
                // a moment to, before the main session does.
                Session::Main if !signalling_here => {
                    let inbox = login.inbox.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(LIVE_GRACE).await;
                        inbox.wake_live();
                    });
                }
                Session::Main => {}
            }
            return Ok(Flow::Continue);
        }
        if login.session != Session::Main {
            return Ok(Flow::Continue);
        }
        match heard {
            Some(crate::cluster::Heard::Stored) => {
                inc(&self.ctx.shared.metrics.bus_wakes);
                self.drain_backlog().await?;
            }
            Some(crate::cluster::Heard::Session(n)) if n > login.epoch => {
                inc(&self.ctx.shared.metrics.sessions_superseded);
                return Ok(Flow::Close);
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }

    async fn finish_pending(&mut self) -> Result<(), ConnError> {
        let wait = async {
            while let Some(f) = self.pending.pop_front() {
                let frame = f.await;
                self.writer.queue(&frame)?;
            }
            Ok::<_, ConnError>(())
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await;
        self.writer.flush().await?;
        Ok(())
    }

    /// Whether envelope `id` is beyond the one after the last delivered.
    fn skips_ahead(&self, id: u64) -> bool {
        self.login
            .as_ref()
            .is_some_and(|l| id > l.cursor.saturating_add(1))
    }

    /// Queues a Deliver push unless this envelope was already delivered.
    pub(crate) fn deliver(
        &mut self,
        id: u64,
        sealed: Vec<u8>,
        introduction: bool,
    ) -> Result<(), ConnError> {
        let Some(login) = self.login.as_mut() else {
            return Ok(());
        };
        if id <= login.cursor {
            return Ok(());
        }
        login.cursor = id;
        login.inbox.delivered_up_to(id);
        self.writer.queue(&ServerFrame {
            request_id: 0,
            body: Some(Body::Deliver(umbra_wire::proto::Deliver {
                envelope_id: id,
                sealed,
                introduction,
                online_only: false,
            })),
        })?;
        inc(&self.ctx.shared.metrics.envelopes_delivered);
        Ok(())
    }

    /// Queues an online-only envelope (no id, no acknowledgement).
    fn deliver_live(&mut self, sealed: Vec<u8>, introduction: bool) -> Result<(), ConnError> {
        self.writer.queue(&ServerFrame {
            request_id: 0,
            body: Some(Body::Deliver(umbra_wire::proto::Deliver {
                envelope_id: 0,
                sealed,
                introduction,
                online_only: true,
            })),
        })?;
        Ok(())
    }
}

async fn next_reply(pending: &mut VecDeque<PendingReply>) -> ServerFrame {
    match pending.front_mut() {
        Some(f) => {
            let frame = f.as_mut().await;
            pending.pop_front();
            frame
        }
        None => std::future::pending().await,
    }
}

async fn next_heard(bus: Option<&mut async_nats::Subscriber>) -> Option<async_nats::Message> {
    use futures_util::StreamExt;
    match bus {
        Some(b) => b.next().await,
        None => std::future::pending().await,
    }
}

async fn wait_inbox(inbox: Option<&Inbox>) {
    match inbox {
        Some(i) => i.wait().await,
        None => std::future::pending().await,
    }
}

async fn wait_idle(idle: &mut Option<Pin<Box<Sleep>>>) {
    match idle {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn future_size<F, A, B, C, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// A connection's task is the `serve` future; an idle server holds one
    /// per client, so it must not carry the handshake's state (about 2.7 KiB
    /// when it was awaited inline) for the connection's whole life.
    #[test]
    fn an_idle_connections_task_is_small() {
        let serve_size = future_size(serve);
        assert!(serve_size <= 2048, "serve's future is {serve_size} bytes");
    }
}
