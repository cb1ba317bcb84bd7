//! One member's control connection: the Noise handshake under the unit's
//! key, the join it asks for, the answer; then it is held open for the
//! call, and its end is the member's leave. The unit ending the member's
//! media connection, or shutting down, is said to the member (`Ended`)
//! before the connection closes.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use umbra_net::NetError;
use umbra_sfu::credential::CredentialError;
use umbra_sfu::{JoinError, Refusal, RoomId};
use umbra_wire::noise::Keypair;
use umbra_wire::proto::ServerHello;
use umbra_wire::unit::{
    EndReason, Ended, Joined, RefusalCode, Refused, UnitEvent, UnitRequest, unit_event,
    unit_request,
};

use super::core::{Command, Join};
use super::metrics::UnitMetrics;

/// Largest frame either side sends (an SDP offer is a few kilobytes).
pub(crate) const MAX_FRAME: u32 = 16 * 1024;
/// How long a member has for the handshake and its join, together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every control connection needs.
pub(crate) struct Ctx {
    pub key: Keypair,
    pub core: mpsc::Sender<Command>,
    pub metrics: Arc<UnitMetrics>,
}

fn refusal(e: &JoinError) -> RefusalCode {
    match e {
        JoinError::Credential(CredentialError::Expired) => RefusalCode::Expired,
        JoinError::Credential(_) => RefusalCode::Credential,
        JoinError::Full(Refusal::RoomFull(_)) => RefusalCode::RoomFull,
        JoinError::Full(Refusal::CredentialBusy(_)) => RefusalCode::CredentialLimit,
        JoinError::Full(Refusal::Busy(_)) => RefusalCode::UnitFull,
        _ => RefusalCode::Offer,
    }
}

fn event(kind: unit_event::Kind) -> UnitEvent {
    UnitEvent { kind: Some(kind) }
}

fn refused(code: RefusalCode, message: String) -> UnitEvent {
    event(unit_event::Kind::Refused(Refused {
        code: code as i32,
        message,
    }))
}

fn ended(reason: EndReason) -> UnitEvent {
    event(unit_event::Kind::Ended(Ended {
        reason: reason as i32,
    }))
}

/// Serves one accepted connection to its end. `unjoined` is its place
/// among the connections that have not joined yet, given back once it has.
pub(crate) async fn serve(
    stream: TcpStream,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    unjoined: super::Unjoined,
) {
    let hello = ServerHello {
        protocol_version: umbra_wire::PROTOCOL_VERSION,
        max_frame_bytes: MAX_FRAME,
        max_envelope_bytes: 0,
        padding: Vec::new(),
    };
    // One deadline for the handshake and the join together.
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let channel = match umbra_net::accept(stream, &ctx.key, HANDSHAKE_TIMEOUT, |_| hello).await {
        Ok(c) => c,
        Err(e) => {
            ctx.metrics.count_control_refused();
            tracing::debug!(error = %e, "a unit handshake failed");
            return;
        }
    };
    let mut reader = channel.reader;
    let mut writer = channel.writer;
    reader.set_max_frame(MAX_FRAME as usize);
    let request = tokio::time::timeout_at(deadline, reader.recv::<UnitRequest>()).await;
    let join = match request {
        Ok(Ok(Some(UnitRequest {
            kind: Some(unit_request::Kind::Join(j)),
        }))) => j,
        Ok(Ok(None)) => return,
        other => {
            let why = match other {
                Err(_) => "no join arrived in time".to_owned(),
                Ok(Err(e)) => format!("the request could not be read: {e}"),
                Ok(Ok(_)) => "the first request must be a join".to_owned(),
            };
            let _ = writer.send(&refused(RefusalCode::Protocol, why)).await;
            let _ = writer.shutdown().await;
            return;
        }
    };
    let Ok(room) = <[u8; 16]>::try_from(join.room.as_slice()) else {
        let why = "a room id is 16 bytes".to_owned();
        let _ = writer.send(&refused(RefusalCode::Protocol, why)).await;
        let _ = writer.shutdown().await;
        return;
    };
    let (reply, answer) = oneshot::channel();
    let asked = ctx
        .core
        .send(Command::Join(Join {
            room: RoomId(room),
            username: join.username,
            password: join.password,
            offer: join.offer,
            reply,
        }))
        .await;
    let Ok(answer) = (match asked {
        Ok(()) => answer.await.map_err(|_| ()),
        Err(_) => Err(()),
    }) else {
        let _ = writer.send(&ended(EndReason::ShuttingDown)).await;
        let _ = writer.shutdown().await;
        return;
    };
    let admitted = match answer {
        Ok(a) => a,
        Err(e) => {
            let _ = writer.send(&refused(refusal(&e), e.to_string())).await;
            let _ = writer.shutdown().await;
            return;
        }
    };
    drop(unjoined);
    let joined = event(unit_event::Kind::Joined(Joined {
        answer: admitted.answer,
        room_size: u32::try_from(admitted.room_size).unwrap_or(u32::MAX),
    }));
    if writer.send(&joined).await.is_err() {
        let _ = ctx.core.send(Command::Leave(admitted.peer)).await;
        return;
    }
    // Held for the call: anything more from the member is not part of the
    // protocol, and its close is its leave.
    let mut lost = admitted.ended;
    let end = tokio::select! {
        r = reader.recv::<UnitRequest>() => {
            match r {
                Ok(None) | Err(NetError::Closed) => {}
                Ok(Some(_)) => tracing::debug!("a member sent more than its join"),
                Err(e) => tracing::debug!(error = %e, "a control connection failed"),
            }
            None
        }
        // The unit's task drops the sender when it stops.
        r = &mut lost => Some(if r.is_ok() {
            EndReason::ConnectionLost
        } else {
            EndReason::ShuttingDown
        }),
        _ = stop.wait_for(|s| *s) => Some(EndReason::ShuttingDown),
    };
    if end != Some(EndReason::ConnectionLost) {
        let _ = ctx.core.send(Command::Leave(admitted.peer)).await;
    }
    if let Some(reason) = end {
        let _ = writer.send(&ended(reason)).await;
    }
    let _ = writer.shutdown().await;
}
