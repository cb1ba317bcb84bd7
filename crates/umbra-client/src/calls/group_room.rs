//! A member's way into a group call's room on the forwarding unit and out
//! of it: the unit the server named with our relay credentials, the join
//! and the media started under the call's current keys, and what the user
//! is told when the unit ends our place.

use umbra_call::e2ee::FrameKeys;
use umbra_call::group_driver::{self, GroupHandle, GroupMedia};
use umbra_wire::invite::UnitLink;
use umbra_wire::proto::RelayCredentials;

use super::CallMedia;
use super::group_keys::CallGroup;
use super::unit::{self, UnitEnd};
use crate::ClientError;

/// Gets into the unit's room and starts the media under the call's
/// current keys.
pub(super) async fn enter_room(
    link: &UnitLink,
    creds: &RelayCredentials,
    room: [u8; 16],
    keys: &CallGroup,
    media: &CallMedia,
) -> Result<(GroupHandle, unit::UnitSession), ClientError> {
    let unit_addr = unit::resolve(link).await?;
    let prepared = group_driver::prepare(unit_addr)?;
    let session = unit::join(link, creds, room, &prepared.offer).await?;
    let frame_keys = FrameKeys::new(&keys.epoch_secret()?.epoch())
        .map_err(|e| ClientError::Invalid(e.to_string()))?;
    let handle = prepared.start(
        &session.answer,
        frame_keys,
        GroupMedia {
            source: media.audio_in.open()?,
            sink: media.audio_out.open()?,
            duration: media.duration,
        },
    )?;
    Ok((handle, session))
}

/// Why the call ended when the unit ended our place.
pub(super) fn unit_reason(end: UnitEnd) -> String {
    match end {
        UnitEnd::ShuttingDown => "the forwarding unit is restarting; call again in a moment",
        UnitEnd::ConnectionLost => "the forwarding unit lost our audio connection",
        UnitEnd::Closed => "the connection to the forwarding unit broke",
    }
    .into()
}

/// The forwarding unit the server named with our relay credentials.
pub(super) fn unit_link(creds: &RelayCredentials) -> Result<UnitLink, ClientError> {
    if creds.unit.is_empty() {
        return Err(ClientError::Invalid(
            "this server has no forwarding unit for group calls (ask its operator to run \
             `umbra serve`, or `umbra server --unit`)"
                .into(),
        ));
    }
    Ok(UnitLink::parse(&creds.unit)?)
}
