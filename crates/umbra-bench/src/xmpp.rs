//! A minimal XMPP client (RFC 6120 c2s over plain TCP), enough to load an
//! XMPP server the way `umbra bench` loads Umbra: open a stream, register
//! in band (XEP-0077) when asked, authenticate with SASL PLAIN, bind a
//! resource, enable stream management (XEP-0198) on senders so the server
//! acknowledges what it handled, send chat messages and read their bodies.
//!
//! The reader does not parse XML: a load client only needs to find a few
//! markers the server writes (`<success`, `<a h='N'`, `<body>…</body>`) in
//! the byte stream, which it does without copying.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The domain the bench's server serves.
pub const DOMAIN: &str = "localhost";
/// The resource every session binds.
const RESOURCE: &str = "bench";
/// How long one setup step may take.
const STEP: Duration = Duration::from_secs(30);

fn stream_header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
}

/// The read side: bytes received and not yet consumed.
pub struct Reader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Reader {
    /// Reads more; `false` at end of stream.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.half.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Waits until `needle` arrives and drops everything up to its end;
    /// fails if `error` arrives first.
    async fn until(&mut self, needle: &str, error: &str) -> anyhow::Result<()> {
        tokio::time::timeout(STEP, async {
            loop {
                if let Some(i) = find(&self.buf, needle.as_bytes()) {
                    self.buf.drain(..i + needle.len());
                    return Ok(());
                }
                if let Some(i) = find(&self.buf, error.as_bytes()) {
                    let tail = String::from_utf8_lossy(&self.buf[i..]).into_owned();
                    bail!("the server refused: {tail}");
                }
                if !self.fill().await? {
                    bail!("the server closed the stream");
                }
            }
        })
        .await
        .with_context(|| format!("waiting for {needle}"))?
    }

    /// The text of each `<body>` received, in order, as they arrive (empty
    /// at end of stream).
    pub async fn bodies(&mut self, out: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
        loop {
            let mut consumed = 0;
            while let Some(start) = find(&self.buf[consumed..], b"<body>") {
                let from = consumed + start + b"<body>".len();
                let Some(len) = find(&self.buf[from..], b"</body>") else {
                    break;
                };
                out.push(self.buf[from..from + len].to_vec());
                consumed = from + len + b"</body>".len();
            }
            self.buf.drain(..consumed);
            if !out.is_empty() {
                return Ok(());
            }
            if !self.fill().await? {
                return Ok(());
            }
        }
    }

    /// The highest `h` of the stream-management acknowledgements received
    /// next (waits for at least one).
    pub async fn acked(&mut self) -> anyhow::Result<u64> {
        loop {
            let mut top = None;
            let mut consumed = 0;
            while let Some(start) = find(&self.buf[consumed..], b"<a h='") {
                let from = consumed + start + b"<a h='".len();
                let Some(len) = find(&self.buf[from..], b"'") else {
                    break;
                };
                let h = std::str::from_utf8(&self.buf[from..from + len])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .context("an unreadable acknowledgement")?;
                top = Some(top.map_or(h, |t: u64| t.max(h)));
                consumed = from + len;
            }
            self.buf.drain(..consumed);
            if let Some(h) = top {
                return Ok(h);
            }
            if !self.fill().await? {
                bail!("the server closed the stream");
            }
        }
    }
}

/// A logged-in session.
pub struct Session {
    /// What the server sends.
    pub reader: Reader,
    /// What goes to the server (buffered: flush after writing).
    pub writer: BufWriter<OwnedWriteHalf>,
    /// The session's full JID.
    pub jid: String,
}

/// The full JID of `user` on the bench's domain.
pub fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}/{RESOURCE}")
}

impl Session {
    /// Connects to `addr` as `user` (password `password`), registering the
    /// account first when `register`, and enabling stream management when
    /// `acks`.
    pub async fn open(
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
        register: bool,
        acks: bool,
    ) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the XMPP server at {addr}"))?;
        tcp.set_nodelay(true)?;
        let (r, w) = tcp.into_split();
        let mut s = Self {
            reader: Reader {
                half: r,
                buf: Vec::with_capacity(4096),
            },
            writer: BufWriter::new(w),
            jid: jid(user),
        };
        s.send(&stream_header()).await?;
        s.reader
            .until("</stream:features>", "<stream:error")
            .await?;
        if register {
            s.send(&format!(
                "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>\
                 <username>{user}</username><password>{password}</password></query></iq>"
            ))
            .await?;
            s.reader.until("id='reg'", "<stream:error").await?;
        }
        let plain = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{password}").as_bytes());
        s.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
        ))
        .await?;
        s.reader.until("<success", "<failure").await?;
        s.send(&stream_header()).await?;
        s.reader
            .until("</stream:features>", "<stream:error")
            .await?;
        s.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{RESOURCE}</resource></bind></iq>"
        ))
        .await?;
        s.reader.until("</iq>", "type='error'").await?;
        if acks {
            s.send("<enable xmlns='urn:xmpp:sm:3'/>").await?;
            s.reader.until("<enabled", "<failed").await?;
        }
        Ok(s)
    }

    /// Writes and flushes `text`.
    pub async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.writer.write_all(text.as_bytes()).await?;
        self.writer.flush().await?;
        Ok(())
    }
}

/// A chat message to `to` whose body is `body` (already XML-safe).
pub fn message(to: &str, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"<message type='chat' to='");
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(b"'><body>");
    out.extend_from_slice(body);
    out.extend_from_slice(b"</body></message>");
}

/// Asks the server how many stanzas it has handled (XEP-0198).
pub const ACK_REQUEST: &[u8] = b"<r xmlns='urn:xmpp:sm:3'/>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_stanza() {
        let mut out = Vec::new();
        message("r1@localhost/bench", b"0123abcd", &mut out);
        assert_eq!(
            out,
            b"<message type='chat' to='r1@localhost/bench'><body>0123abcd</body></message>"
        );
    }

    #[test]
    fn markers_are_found_anywhere() {
        assert_eq!(find(b"xx<a h='12'/>", b"<a h='"), Some(2));
        assert_eq!(find(b"nothing", b"<body>"), None);
    }
}
