//! A fronting port's stream (`umbra_wire::front`): after the marked hello
//! and the proxy's flight, both ways are TLS application-data records whose
//! payloads are the masked stream (`umbra_wire::mask`).
//!
//! [`Fronted`] is that stream for either end: the client (which opens it
//! with [`Fronted::open`]) and the proxy (which wraps an admitted socket
//! with [`Fronted::server`]). [`client_hello`] makes the ClientHello both
//! use: the client to be admitted, the proxy to learn the fronted site's
//! answer to a hello of that shape.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use rand::RngCore;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use umbra_wire::front::{
    self, APPLICATION_DATA, CCS_RECORD, CHANGE_CIPHER_SPEC, FINISHED_FILLER, FrontError,
    MAX_PAYLOAD, RECORD_HEADER, Records,
};
use umbra_wire::mask::{End, Mask, Way};
use umbra_wire::proxy::{ProxyLink, Target};

use crate::NetError;
use crate::masked::Unread;

/// The first record of a TLS handshake with `name`, as rustls makes it
/// (offering HTTP/2 and HTTP/1.1, as browsers do).
pub fn client_hello(name: &str) -> Result<Vec<u8>, NetError> {
    let server = ServerName::try_from(name.to_string())
        .map_err(|_| NetError::Proxy("the fronted site's name is not a valid TLS name"))?;
    let mut config = (*crate::dial::client_config()?).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server)
        .map_err(|_| NetError::Proxy("TLS setup failed"))?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello)?;
    // One record is what the fronting proxy reads; rustls writes one.
    let len = hello
        .get(3..5)
        .map(|l| RECORD_HEADER + usize::from(u16::from_be_bytes([l[0], l[1]])));
    if len != Some(hello.len()) {
        return Err(NetError::Front(FrontError::Hello));
    }
    Ok(hello)
}

/// Which end of a fronted stream this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

/// A fronted stream.
pub struct Fronted<S> {
    inner: S,
    /// Masks what this end reads and writes.
    read_mask: Mask,
    write_mask: Mask,
    records: Records,
    /// Payload bytes read, unmasked, not yet returned.
    plain: Unread,
    /// A record built from the caller's bytes, not yet all written.
    staged: Vec<u8>,
    staged_at: usize,
    /// A writer waiting for `staged` to go out. The socket keeps one write
    /// waker, and a read that pushes `staged` on replaces it with the
    /// reader's: the writer is woken by hand when that read gets it out.
    writer: Option<Waker>,
    /// The proxy drops the client's filler Finished: set until it has.
    skip_filler: bool,
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Fronted<S> {
    /// The client's side: sends the marked hello for `target` on `stream`
    /// (a fresh connection to the proxy of `link`, which fronts `name`),
    /// checks the proxy's flight, answers it, and returns the stream.
    pub async fn open(
        mut stream: S,
        link: &ProxyLink,
        name: &str,
        target: Target,
        now_unix: u64,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let mut hello = client_hello(name)?;
        front::mark_hello(&link.secret, &mut hello, now_unix, target)?;
        let mut client_random = [0u8; 32];
        client_random.copy_from_slice(&hello[11..43]);
        let run = async {
            stream.write_all(&hello).await?;
            let mut got = Vec::with_capacity(8192);
            let mut buf = vec![0u8; 8192];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(NetError::Proxy(
                        "the proxy closed the connection without answering",
                    ));
                }
                got.extend_from_slice(&buf[..n]);
                if let Some(len) = front::read_flight(&link.secret, &client_random, &got)? {
                    got.drain(..len);
                    let mut finish = CCS_RECORD.to_vec();
                    finish.extend_from_slice(&front::app_data_header(FINISHED_FILLER));
                    let mut filler = [0u8; FINISHED_FILLER];
                    rand::thread_rng().fill_bytes(&mut filler);
                    finish.extend_from_slice(&filler);
                    stream.write_all(&finish).await?;
                    return Ok(got);
                }
            }
        };
        let early = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| NetError::Timeout("the proxy's answer"))??;
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&client_random[..16]);
        let mut s = Self::new(stream, Role::Client, &link.secret, &nonce, target);
        s.records.feed(&early);
        Ok(s)
    }

    /// The proxy's side of an admitted connection whose hello carried
    /// `nonce`; `early` is what the client sent after its hello.
    pub fn server(
        stream: S,
        secret: &[u8; 32],
        nonce: &[u8; 16],
        target: Target,
        early: &[u8],
    ) -> Self {
        let mut s = Self::new(stream, Role::Server, secret, nonce, target);
        s.records.feed(early);
        s
    }

    fn new(inner: S, role: Role, secret: &[u8; 32], nonce: &[u8; 16], target: Target) -> Self {
        let (read_way, write_way) = match role {
            Role::Client => (Way::Down, Way::Up),
            Role::Server => (Way::Up, Way::Down),
        };
        Self {
            inner,
            read_mask: Mask::proxied(secret, nonce, target, read_way, End::Receiver),
            write_mask: Mask::proxied(secret, nonce, target, write_way, End::Sender),
            records: Records::default(),
            plain: Unread::default(),
            staged: Vec::new(),
            staged_at: 0,
            writer: None,
            skip_filler: role == Role::Server,
            eof: false,
        }
    }

    /// Takes whole records out of what was read: payloads go to `plain`.
    fn take_records(&mut self) -> io::Result<()> {
        let plain = &mut self.plain.bytes;
        loop {
            let at = plain.len();
            match self.records.next_record(plain) {
                Ok(None) => return Ok(()),
                Ok(Some(CHANGE_CIPHER_SPEC)) => plain.truncate(at),
                Ok(Some(APPLICATION_DATA)) if self.skip_filler => {
                    self.skip_filler = false;
                    plain.truncate(at);
                }
                Ok(Some(APPLICATION_DATA)) => self.read_mask.apply(&mut plain[at..]),
                Ok(Some(_)) => return Err(io::Error::other(FrontError::Alert)),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
    }

    /// [`Self::flush_staged`] for the writing side, which is woken again
    /// when a read gets the rest out first.
    fn flush_for_writer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.flush_staged(cx);
        if r.is_pending() {
            self.writer = Some(cx.waker().clone());
        }
        r
    }

    /// Writes what is staged; `Ready(Ok)` once all of it is out.
    fn flush_staged(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.staged_at < self.staged.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.staged[self.staged_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.staged_at += n;
        }
        self.staged.clear();
        self.staged_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S> Fronted<S> {
    /// The socket underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Fronted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A record still being written goes out whatever the caller awaits.
        let before = this.staged_at;
        let flushed = this.flush_staged(cx);
        if (this.staged_at != before || this.staged.is_empty())
            && let Some(w) = this.writer.take()
        {
            w.wake();
        }
        if let Poll::Ready(Err(e)) = flushed {
            return Poll::Ready(Err(e));
        }
        loop {
            if this.plain.serve(buf) {
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
                continue;
            }
            this.records.feed(rb.filled());
            this.take_records()?;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Fronted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Nothing new is taken until the last record is out, so a refused
        // write leaves the stream where it was.
        ready!(this.flush_for_writer(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = buf.len().min(MAX_PAYLOAD);
        this.staged.extend_from_slice(&front::app_data_header(take));
        this.staged.extend_from_slice(&buf[..take]);
        this.write_mask.apply(&mut this.staged[RECORD_HEADER..]);
        if let Poll::Ready(Err(e)) = this.flush_staged(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.flush_for_writer(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.flush_for_writer(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_ends_carry_bytes_both_ways_through_records() {
        let (a, b) = tokio::io::duplex(1024);
        let (secret, nonce) = ([1; 32], [2; 16]);
        let mut client = Fronted::new(a, Role::Client, &secret, &nonce, Target::Relay);
        let mut server = Fronted::server(b, &secret, &nonce, Target::Relay, &[]);
        // The client's filler Finished, as `open` sends it.
        let mut filler = CCS_RECORD.to_vec();
        filler.extend_from_slice(&front::app_data_header(FINISHED_FILLER));
        filler.extend_from_slice(&[0; FINISHED_FILLER]);
        client.inner.write_all(&filler).await.expect("filler");
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.expect("write");
            client.flush().await.expect("flush");
            let mut back = vec![0u8; 5];
            client.read_exact(&mut back).await.expect("read");
            back
        });
        let mut got = vec![0u8; big.len()];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(got, big);
        server.write_all(b"hello").await.expect("write");
        server.flush().await.expect("flush");
        assert_eq!(writer.await.expect("join"), b"hello");
    }

    #[test]
    fn a_hello_is_one_record_naming_the_site() {
        let hello = client_hello("www.example.com").expect("hello");
        assert_eq!(hello[0], 22);
        assert!(hello.windows(15).any(|w| w == b"www.example.com"));
    }
}
