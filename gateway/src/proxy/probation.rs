//! Watching a pending connection (see `slots`) until its first request is complete, without
//! reading it: the bytes stay in the socket for the HTTP server, or the TLS handshake, to read.
//! A pending connection costs its socket and a small task; no buffer is kept between looks.
use std::{io, os::fd::AsFd as _};

use tokio::{io::Interest, net::TcpStream};

/// Whether `first` (a connection's first bytes) completes what must arrive before it is served:
/// a request head (ended by an empty line; a bare-LF one counts, the HTTP server judges it), or
/// with `tls` the first TLS record (the ClientHello). Anything that is not a TLS handshake
/// record, and `max` bytes or more, count as complete too: the handshake, or the HTTP server's
/// header size cap, then refuses them at once.
pub fn complete(first: &[u8], tls: bool, max: usize) -> bool {
    if first.len() >= max {
        return true;
    }
    if tls {
        return match first {
            [0x16, _, _, hi, lo, rest @ ..] => {
                rest.len() >= usize::from(u16::from_be_bytes([*hi, *lo]))
            }
            [0x16, ..] => false,
            _ => !first.is_empty(),
        };
    }
    first.windows(4).any(|w| w == b"\r\n\r\n") || first.windows(2).any(|w| w == b"\n\n")
}

/// Waits until the connection's first request is complete (`true`) or the client closed it
/// (`false`). `max` bounds how much is looked at.
pub async fn first_request(stream: &TcpStream, tls: bool, max: usize) -> io::Result<bool> {
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        // Incomplete reports WouldBlock, which clears the readiness: the next look is when more
        // bytes arrive, not at once.
        match stream.try_io(Interest::READABLE, || {
            let mut first = vec![0u8; max];
            let n = peek(stream, &mut first)?;
            if n == 0 {
                return Ok(false);
            }
            if complete(&first[..n], tls, max) {
                return Ok(true);
            }
            // The client half-closed: the rest will never come (and the readiness would stay).
            if ready.is_read_closed() {
                return Ok(false);
            }
            Err(io::ErrorKind::WouldBlock.into())
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
    }
}

/// The bytes waiting in the socket, left there.
fn peek(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    crate::sys::peek(stream.as_fd(), buf)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    #[test]
    fn what_counts_as_a_complete_first_request() {
        let hello = |len: u16, have: usize| {
            let mut r = vec![0x16, 3, 1];
            r.extend_from_slice(&len.to_be_bytes());
            r.resize(5 + have, 0xab);
            r
        };
        let cases: &[(&str, Vec<u8>, bool, bool)] = &[
            ("nothing yet", b"".to_vec(), false, false),
            (
                "a request line only",
                b"GET / HTTP/1.1\r\n".to_vec(),
                false,
                false,
            ),
            (
                "a slowloris head",
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaa".to_vec(),
                false,
                false,
            ),
            (
                "a whole head",
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
                false,
                true,
            ),
            (
                "a head and a body",
                b"POST / HTTP/1.1\r\n\r\n{}".to_vec(),
                false,
                true,
            ),
            (
                "bare LF line ends",
                b"GET / HTTP/1.1\nHost: a\n\n".to_vec(),
                false,
                true,
            ),
            (
                "a CR without LF",
                b"GET / HTTP/1.1\r\r\r\r".to_vec(),
                false,
                false,
            ),
            ("at the size cap", vec![b'a'; 64], false, true),
            ("just under the cap", vec![b'a'; 63], false, false),
            ("a whole ClientHello record", hello(10, 10), true, true),
            ("a ClientHello and more", hello(10, 20), true, true),
            ("a ClientHello cut short", hello(10, 9), true, false),
            (
                "a record header cut short",
                vec![0x16, 3, 1, 0],
                true,
                false,
            ),
            ("an empty record", hello(0, 0), true, true),
            (
                "plain HTTP on a TLS port: refused by the handshake",
                b"GET".to_vec(),
                true,
                true,
            ),
            ("a slow TLS byte", vec![0x16], true, false),
            (
                "a ClientHello longer than the cap",
                hello(1000, 59),
                true,
                true,
            ),
        ];
        for (name, first, tls, want) in cases {
            assert_eq!(complete(first, *tls, 64), *want, "{name}");
        }
    }

    #[tokio::test]
    async fn waits_for_the_whole_head_and_leaves_it_in_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let watch = tokio::spawn(async move {
            let done = first_request(&server, false, 1024).await;
            (done, server)
        });
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !watch.is_finished(),
            "an incomplete head was taken as complete"
        );
        client.write_all(b"Host: a\r\n\r\n").await.unwrap();
        let (done, server) = tokio::time::timeout(std::time::Duration::from_secs(5), watch)
            .await
            .expect("the complete head went unnoticed")
            .unwrap();
        assert!(done.unwrap());
        let mut buf = [0u8; 64];
        let n = peek(&server, &mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "bytes were consumed"
        );

        // A client that leaves is noticed.
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"GET").await.unwrap();
        drop(client);
        let done = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            first_request(&server, false, 1024),
        )
        .await
        .expect("a closed connection went unnoticed");
        assert!(!done.unwrap());
    }
}
