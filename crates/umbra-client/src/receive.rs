//! Receiving: `sync` (fetch what waits, then return) and `listen` (stay
//! connected, with keepalives and reconnection), each applying envelopes
//! through [`crate::inbox`] and acknowledging them only once applied.

use umbra_wire::proto::server_frame;

use crate::calls::IncomingCalls;
use crate::client::Client;
use crate::conn::ServerConn;
use crate::model::Event;
use crate::{ClientError, inbox, outbox};

/// Envelopes `sync` acknowledges per confirmed request.
const ACK_BATCH: usize = 500;
/// How often `listen` pings an otherwise quiet connection.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);
/// First and longest wait before `listen` reconnects.
const RECONNECT_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

impl Client {
    /// Receives everything waiting on the server, applies it, and returns
    /// what happened.
    pub async fn sync(&mut self) -> Result<Vec<Event>, ClientError> {
        if self.business_card.is_some() {
            // The operator's verification, once given, goes out with what
            // this business sends next.
            self.refresh_business_card().await?;
        }
        let mut events = self.flush_earlier().await?;
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        outbox::remember_limit(self.profile.conn(), server.hello())?;
        self.login(&mut server).await?;
        // Acknowledged in confirmed batches: when sync returns, the server has
        // deleted what this device applied.
        let mut applied = Vec::new();
        loop {
            match server.next_push().await? {
                Some(server_frame::Body::Deliver(d)) => {
                    events.extend(inbox::apply(&self.profile, &self.device(), &d)?.events);
                    // Online-only envelopes were never stored: nothing to delete.
                    if !d.online_only {
                        applied.push(d.envelope_id);
                    }
                    if applied.len() >= ACK_BATCH {
                        server.ack_confirmed(std::mem::take(&mut applied)).await?;
                    }
                }
                Some(server_frame::Body::QueueDrained(_)) | None => break,
                Some(_) => {}
            }
        }
        server.ack_confirmed(applied).await?;
        server.close().await;
        events.extend(self.catch_up_deferred().await?);
        self.owe_and_queue_receipts()?;
        events.extend(self.flush_earlier().await?);
        events.extend(self.fetch_arrived().await?);
        Ok(events)
    }

    /// Messages wait (`deferred`) from an epoch this device has not
    /// reached: the commit that made it may never come in an envelope (its
    /// author died after claiming the epoch), so ask the ledger for it, on
    /// an anonymous connection (the logged-in one would tell the server
    /// which device is in which group).
    async fn catch_up_deferred(&self) -> Result<Vec<Event>, ClientError> {
        let groups: Vec<Vec<u8>> = {
            let conn = self.profile.conn();
            let mut stmt = conn.prepare("SELECT DISTINCT group_id FROM deferred")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        let mut events = Vec::new();
        for group_id in groups {
            events.extend(self.catch_up(&mut server, &group_id).await?);
        }
        server.close().await;
        Ok(events)
    }

    /// Receives until `stop` resolves, handing each event to `on_event` as
    /// it happens. Keeps the connection alive with pings (so a proxy's idle
    /// timeout does not cut it), and reconnects with backoff when it drops.
    pub async fn listen(
        &mut self,
        on_event: impl FnMut(&Event),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClientError> {
        self.listen_calls(on_event, stop, None).await
    }

    /// [`Client::listen`], also taking calls: an incoming call rings (if
    /// "who can call you" allows it), `calls.decide` answers or declines
    /// it, and the call runs here. Without `calls`, offers are left alone
    /// (the caller's hang-up then records a missed call).
    pub async fn listen_calls(
        &mut self,
        mut on_event: impl FnMut(&Event),
        stop: impl std::future::Future<Output = ()>,
        mut calls: Option<IncomingCalls>,
    ) -> Result<(), ClientError> {
        tokio::pin!(stop);
        let mut backoff = RECONNECT_MIN;
        loop {
            match self
                .listen_once(&mut on_event, &mut stop, &mut backoff, calls.as_mut())
                .await
            {
                Ok(()) => return Ok(()),
                Err(e @ (ClientError::Net(_) | ClientError::Unreachable { .. })) => {
                    on_event(&Event::Warning {
                        text: format!(
                            "connection lost ({e}); reconnecting in {} s",
                            backoff.as_secs()
                        ),
                    });
                    tokio::select! {
                        _ = &mut stop => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What was just applied is read too if it is shown; what receipts
    /// that owes go into the outbox.
    fn owe_and_queue_receipts(&self) -> Result<(), ClientError> {
        if self.shows {
            self.mark_read_group(None)?;
        }
        self.queue_receipts()
    }

    /// One connection's worth of [`Client::listen`]; `Ok` when stopped.
    async fn listen_once(
        &mut self,
        on_event: &mut impl FnMut(&Event),
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        backoff: &mut std::time::Duration,
        mut calls: Option<&mut IncomingCalls>,
    ) -> Result<(), ClientError> {
        if self.listen_flushes {
            for e in self.flush_earlier().await? {
                on_event(&e);
            }
        }
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        self.login(&mut server).await?;
        *backoff = RECONNECT_MIN;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            let push = tokio::select! {
                _ = stop.as_mut() => break,
                _ = keepalive.tick() => {
                    server.ping().await?;
                    continue;
                }
                p = server.next_push() => p?,
            };
            match push {
                Some(server_frame::Body::Deliver(d)) => {
                    let applied = inbox::apply(&self.profile, &self.device(), &d)?;
                    for e in &applied.events {
                        on_event(e);
                    }
                    if !d.online_only {
                        server.ack(vec![d.envelope_id]).await?;
                    }
                    self.owe_and_queue_receipts()?;
                    if applied
                        .events
                        .iter()
                        .any(|e| matches!(e, Event::Message { .. }))
                    {
                        for e in self.fetch_arrived().await? {
                            on_event(&e);
                        }
                    }
                    for signal in applied.signals {
                        let Some(calls) = calls.as_deref_mut() else {
                            continue;
                        };
                        if self
                            .incoming_call(&mut server, signal, calls, on_event, stop)
                            .await?
                        {
                            server.close().await;
                            return Ok(());
                        }
                    }
                    if self.listen_flushes
                        && (outbox::pending(self.profile.conn())? > 0
                            || crate::ledger::any_waiting(self.profile.conn())?)
                    {
                        for e in self.flush_earlier().await? {
                            on_event(&e);
                        }
                    }
                }
                None => return Err(ClientError::Net(umbra_net::NetError::Closed)),
                Some(_) => {}
            }
        }
        server.close().await;
        Ok(())
    }
}
