//! Running the Noise IK handshake over a stream.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use umbra_wire::noise::{ClientHandshake, HANDSHAKE_REJECTED, IncomingHandshake, Keypair};
use umbra_wire::proto::{ClientHello, ServerHello};

use crate::channel::{FrameReader, FrameWriter};
use crate::{NetError, Stream};

/// An established channel, split into its halves.
pub struct Channel {
    /// Incoming frames.
    pub reader: FrameReader,
    /// Outgoing frames.
    pub writer: FrameWriter,
    /// Binds signatures (logins) to this channel.
    pub handshake_hash: [u8; 32],
    /// The peer's static public key.
    pub remote_static: [u8; 32],
}

async fn read_noise_message<S: Stream>(stream: &mut S) -> Result<Vec<u8>, NetError> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(eof_is_closed)?;
    let len = u16::from_be_bytes(len) as usize;
    let mut msg = vec![0u8; len];
    stream.read_exact(&mut msg).await.map_err(eof_is_closed)?;
    Ok(msg)
}

fn eof_is_closed(e: std::io::Error) -> NetError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        NetError::Closed
    } else {
        NetError::from(e)
    }
}

/// Client side: handshake with the server whose static key is `server_public`,
/// presenting `local` as our static key (a fresh one for anonymous sessions).
pub async fn connect<S: Stream>(
    mut stream: S,
    local: &Keypair,
    server_public: &[u8; 32],
    timeout: Duration,
) -> Result<(Channel, ServerHello), NetError> {
    let run = async {
        let (hs, msg1) = ClientHandshake::start(local, server_public)?;
        stream.write_all(&msg1).await?;
        let msg2 = match read_noise_message(&mut stream).await {
            Ok(m) => m,
            // A server that cannot read message 1 answers HANDSHAKE_REJECTED;
            // one that just closes is overloaded or not an Umbra server.
            Err(NetError::Closed) => return Err(NetError::ClosedDuringHandshake),
            Err(e) => return Err(e),
        };
        let (session, hello) = hs.finish(&msg2)?;
        Ok::<_, NetError>((session, hello))
    };
    let (session, hello) = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| NetError::Timeout("handshake"))??;
    Ok((Channel::new(stream, session), hello))
}

/// Server side: reads the client's handshake and answers with the hello
/// `respond` builds. A client that cannot be read (wrong key, garbage) gets
/// [`HANDSHAKE_REJECTED`] and the error.
pub async fn accept<S: Stream>(
    mut stream: S,
    local: &Keypair,
    timeout: Duration,
    respond: impl FnOnce(&ClientHello) -> ServerHello,
) -> Result<Channel, NetError> {
    let run = async {
        let msg1 = read_noise_message(&mut stream).await?;
        let incoming = match IncomingHandshake::read(local, &msg1) {
            Ok(i) => i,
            Err(e) => {
                let _ = stream.write_all(&HANDSHAKE_REJECTED).await;
                let _ = stream.shutdown().await;
                return Err(e.into());
            }
        };
        let hello = respond(&incoming.hello);
        let (msg2, session) = incoming.accept(&hello)?;
        stream.write_all(&msg2).await?;
        Ok::<_, NetError>(session)
    };
    let session = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| NetError::Timeout("handshake"))??;
    Ok(Channel::new(stream, session))
}

impl Channel {
    fn new<S: Stream>(stream: S, session: umbra_wire::noise::Session) -> Self {
        let (rd, wr) = tokio::io::split(stream);
        Self {
            reader: FrameReader::new(Box::new(rd), session.opener),
            writer: FrameWriter::new(Box::new(wr), session.sealer),
            handshake_hash: session.handshake_hash,
            remote_static: session.remote_static,
        }
    }
}
