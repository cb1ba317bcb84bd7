//! A member's control connection to a group call's forwarding unit
//! (`proto/unit.proto`): Noise under the unit's key from the server's unit
//! link, with a fresh key of our own (the unit learns no identity), one
//! join, the unit's answer; then held for the call, and closed to leave.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use umbra_net::{FrameReader, FrameWriter, NetError};
use umbra_wire::invite::UnitLink;
use umbra_wire::noise::Keypair;
use umbra_wire::proto::RelayCredentials;
use umbra_wire::unit::{EndReason, JoinRoom, UnitEvent, UnitRequest, unit_event, unit_request};

use crate::ClientError;

/// How long connecting, the handshake and the join may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A room joined on a unit; dropping it (or [`UnitSession::leave`]) leaves.
pub struct UnitSession {
    reader: FrameReader,
    writer: FrameWriter,
    /// The unit's SDP answer to our offer.
    pub answer: String,
    /// Connections in the room when we joined, ours included.
    pub room_size: u32,
    /// The unit's media address (where the answer's candidate points).
    pub media: SocketAddr,
}

/// Why the unit ended our place in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitEnd {
    /// Our media connection never came up, or went silent.
    ConnectionLost,
    /// The unit is shutting down.
    ShuttingDown,
    /// The control connection broke without a word.
    Closed,
}

/// Resolves the unit link's host and port.
pub async fn resolve(link: &UnitLink) -> Result<SocketAddr, ClientError> {
    let host = link.0.host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, link.0.port))
        .await?
        .next()
        .ok_or_else(|| ClientError::Invalid(format!("cannot resolve {}", link.0.host)))
}

/// Joins `room` on the unit with relay credentials, offering `offer`.
pub async fn join(
    link: &UnitLink,
    creds: &RelayCredentials,
    room: [u8; 16],
    offer: &str,
) -> Result<UnitSession, ClientError> {
    let media = resolve(link).await?;
    let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(media))
        .await
        .map_err(|_| NetError::Timeout("the connection to the forwarding unit"))??;
    let _ = stream.set_nodelay(true);
    let local = Keypair::generate().map_err(NetError::from)?;
    let (channel, _) = umbra_net::connect(stream, &local, &link.0.server_key, TIMEOUT).await?;
    let (mut reader, mut writer) = (channel.reader, channel.writer);
    let request = UnitRequest {
        kind: Some(unit_request::Kind::Join(JoinRoom {
            room: room.to_vec(),
            username: creds.username.clone(),
            password: creds.password.clone(),
            offer: offer.to_owned(),
        })),
    };
    writer.send(&request).await?;
    let event = tokio::time::timeout(TIMEOUT, reader.recv::<UnitEvent>())
        .await
        .map_err(|_| NetError::Timeout("the join to the group call"))??;
    match event.and_then(|e| e.kind) {
        Some(unit_event::Kind::Joined(j)) => Ok(UnitSession {
            reader,
            writer,
            answer: j.answer,
            room_size: j.room_size,
            media,
        }),
        Some(unit_event::Kind::Refused(r)) => Err(ClientError::UnitRefused(r.message)),
        Some(unit_event::Kind::Ended(_)) => Err(ClientError::UnitRefused(
            "it is shutting down: try again in a moment".into(),
        )),
        None => Err(ClientError::Protocol(
            "the forwarding unit closed the connection without answering".into(),
        )),
    }
}

impl UnitSession {
    /// Waits until the unit ends our place in the room.
    pub async fn ended(&mut self) -> UnitEnd {
        loop {
            match self.reader.recv::<UnitEvent>().await {
                Ok(Some(UnitEvent {
                    kind: Some(unit_event::Kind::Ended(e)),
                })) => {
                    return match EndReason::try_from(e.reason) {
                        Ok(EndReason::ShuttingDown) => UnitEnd::ShuttingDown,
                        _ => UnitEnd::ConnectionLost,
                    };
                }
                // Nothing else is sent after the join; ignore what a newer
                // unit might add.
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return UnitEnd::Closed,
            }
        }
    }

    /// Leaves the room (closes the control connection).
    pub async fn leave(mut self) {
        let _ = self.writer.shutdown().await;
    }
}
