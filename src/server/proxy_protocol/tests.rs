use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use ppp::v2::{Builder, Command, Protocol, Type, Version as V2Version};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::*;
use crate::config::{ProxyProtocol, TrustedProxies};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn v2(command: Command, source: &str, destination: &str) -> Vec<u8> {
    Builder::with_addresses(
        V2Version::Two | command,
        Protocol::Stream,
        (addr(source), addr(destination)),
    )
    .build()
    .unwrap()
}

const V1_TCP4: &[u8] = b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n";

#[test]
fn the_first_bytes_tell_whether_a_header_begins() {
    assert_eq!(start(b""), Start::NeedMore);
    assert_eq!(start(b"P"), Start::NeedMore);
    assert_eq!(start(b"PROXY"), Start::NeedMore);
    assert_eq!(start(b"PROXY "), Start::Header(Version::V1));
    assert_eq!(start(V1_TCP4), Start::Header(Version::V1));
    assert_eq!(start(b"\r\n\r\n\0"), Start::NeedMore);
    assert_eq!(start(V2_SIGNATURE), Start::Header(Version::V2));
    // HTTP (leading empty lines included), TLS and lookalikes are the connection's own.
    assert_eq!(start(b"GET / HTTP/1.1\r\n"), Start::Plain);
    assert_eq!(start(b"POST /"), Start::Plain);
    assert_eq!(start(b"PROXYX"), Start::Plain);
    assert_eq!(start(b"\r\n\r\nGET / HTTP/1.1"), Start::Plain);
    assert_eq!(start(b"\x16\x03\x01\x02\x00"), Start::Plain);
    assert_eq!(start(b"PRI * HTTP/2.0\r\n"), Start::Plain);
}

#[test]
fn v1_names_the_source_and_ends_at_its_crlf() {
    let mut buf = V1_TCP4.to_vec();
    buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        parse(Version::V1, &buf),
        Parsed::Complete {
            len: V1_TCP4.len(),
            source: Some(addr("192.0.2.7:51234"))
        }
    );
    let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n";
    assert_eq!(
        parse(Version::V1, v6),
        Parsed::Complete {
            len: v6.len(),
            source: Some(addr("[2001:db8::7]:51234"))
        }
    );
    let unknown = b"PROXY UNKNOWN\r\n";
    assert_eq!(
        parse(Version::V1, unknown),
        Parsed::Complete {
            len: unknown.len(),
            source: None
        }
    );
}

#[test]
fn v1_grammar_errors_are_invalid() {
    for bad in [
        &b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\rX"[..],
        b"PROXY TCP5 192.0.2.7 198.51.100.1 51234 443\r\n",
        b"PROXY TCP4 2001:db8::7 198.51.100.1 51234 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 051234 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 443\r\n",
        b"PROXY TCP4 192.0.2.7\xff 198.51.100.1 1 2\r\n",
        b"PROXY \r\n",
    ] {
        assert_eq!(
            parse(Version::V1, bad),
            Parsed::Invalid,
            "{}",
            bad.escape_ascii()
        );
    }
    // 107 bytes is the longest v1 header; without its CRLF by then it never ends.
    let long = [b"PROXY TCP6 ".as_slice(), &[b'1'; 120]].concat();
    assert_eq!(parse(Version::V1, &long), Parsed::Invalid);
}

#[test]
fn v2_names_the_source_and_local_keeps_the_peer() {
    let header = v2(Command::Proxy, "192.0.2.7:51234", "198.51.100.1:443");
    let mut buf = header.clone();
    buf.extend_from_slice(b"\x16\x03\x01");
    assert_eq!(
        parse(Version::V2, &buf),
        Parsed::Complete {
            len: header.len(),
            source: Some(addr("192.0.2.7:51234"))
        }
    );
    let v6 = v2(Command::Proxy, "[2001:db8::7]:51234", "[2001:db8::1]:443");
    assert_eq!(
        parse(Version::V2, &v6),
        Parsed::Complete {
            len: v6.len(),
            source: Some(addr("[2001:db8::7]:51234"))
        }
    );
    let local = v2(Command::Local, "192.0.2.7:51234", "198.51.100.1:443");
    assert_eq!(
        parse(Version::V2, &local),
        Parsed::Complete {
            len: local.len(),
            source: None
        }
    );
}

#[test]
fn v2_tlvs_are_part_of_the_header() {
    let header = Builder::with_addresses(
        V2Version::Two | Command::Proxy,
        Protocol::Stream,
        (addr("192.0.2.7:1"), addr("198.51.100.1:2")),
    )
    .write_tlv(Type::Authority, b"profiles.example")
    .unwrap()
    .write_tlv(Type::NoOp, &[0; 300])
    .unwrap()
    .build()
    .unwrap();
    let Parsed::Complete { len, .. } = parse(Version::V2, &header) else {
        panic!("not parsed");
    };
    assert_eq!(len, header.len());
}

#[test]
fn v2_grammar_errors_are_invalid() {
    let good = v2(Command::Proxy, "192.0.2.7:51234", "198.51.100.1:443");
    let with = |i: usize, b: u8| {
        let mut h = good.clone();
        h[i] = b;
        h
    };
    for bad in [
        with(12, 0x11), // version 1 in the binary format
        with(12, 0x2f), // unknown command
        with(13, 0x41), // unknown family
        with(13, 0x13), // unknown transport
        with(15, 4),    // length too short for two IPv4 addresses
    ] {
        assert_eq!(
            parse(Version::V2, &bad),
            Parsed::Invalid,
            "{}",
            bad.escape_ascii()
        );
    }
}

#[test]
fn every_strict_prefix_of_a_header_is_incomplete() {
    let headers = [
        (Version::V1, V1_TCP4.to_vec()),
        (
            Version::V1,
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n".to_vec(),
        ),
        (Version::V1, b"PROXY UNKNOWN\r\n".to_vec()),
        (
            Version::V2,
            v2(Command::Proxy, "192.0.2.7:51234", "198.51.100.1:443"),
        ),
        (
            Version::V2,
            v2(Command::Proxy, "[2001:db8::7]:1", "[2001:db8::1]:2"),
        ),
        (
            Version::V2,
            v2(Command::Local, "192.0.2.7:1", "192.0.2.8:2"),
        ),
    ];
    for (version, header) in headers {
        let sig = if version == Version::V1 {
            V1_SIGNATURE
        } else {
            V2_SIGNATURE
        };
        for n in sig.len()..header.len() {
            assert_eq!(
                parse(version, &header[..n]),
                Parsed::Incomplete,
                "{}",
                header[..n].escape_ascii()
            );
        }
    }
}

/// A reader that hands out one byte per read, as a peer dribbling its header would.
struct Dribble(Vec<u8>);

impl AsyncRead for Dribble {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.0.is_empty() {
            let byte = self.0.remove(0);
            buf.put_slice(&[byte]);
        }
        Poll::Ready(Ok(()))
    }
}

fn settings(mode: ProxyProtocol, trusted: &[&str]) -> Settings {
    let nets = trusted.iter().map(|n| n.parse().unwrap()).collect();
    Settings {
        mode,
        trusted: Arc::new(TrustedProxies::new(nets)),
        rejected: None,
    }
}

const LB: &str = "10.0.0.5:40000";

async fn read_all(
    input: &[u8],
    mode: ProxyProtocol,
    peer: &str,
) -> Result<(Vec<u8>, SocketAddr), Closed> {
    let s = settings(mode, &["10.0.0.0/8"]);
    let mut io = Dribble(input.to_vec());
    let (rest, client) = read(&mut io, addr(peer), &s).await?;
    let mut all = Vec::new();
    Rewound::new(rest, io).read_to_end(&mut all).await.unwrap();
    Ok((all, client))
}

#[tokio::test]
async fn a_dribbled_header_is_read_whole_and_what_follows_is_replayed() {
    let request = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n";
    for header in [
        V1_TCP4.to_vec(),
        v2(Command::Proxy, "192.0.2.7:51234", "198.51.100.1:443"),
    ] {
        let input = [header.as_slice(), request].concat();
        for mode in [ProxyProtocol::Accept, ProxyProtocol::Require] {
            let (rest, client) = read_all(&input, mode, LB).await.unwrap();
            assert_eq!(rest, request);
            assert_eq!(client, addr("192.0.2.7:51234"));
        }
    }
}

#[tokio::test]
async fn trust_and_mode_decide_who_may_send_a_header() {
    let request = b"GET / HTTP/1.1\r\n\r\n";
    let with_header = [V1_TCP4, request].concat();
    let stranger = "203.0.113.9:5000";
    let refused = |r| Err(Closed::Refused(r));
    use ProxyProtocol::{Accept, Require};
    // accept: anyone may go without; only a trusted peer may send one.
    assert_eq!(
        read_all(request, Accept, stranger).await,
        Ok((request.to_vec(), addr(stranger)))
    );
    assert_eq!(
        read_all(request, Accept, LB).await,
        Ok((request.to_vec(), addr(LB)))
    );
    assert_eq!(
        read_all(&with_header, Accept, stranger).await,
        refused(Refusal::Untrusted)
    );
    // require: a trusted peer without one, and any stranger, are refused.
    assert_eq!(
        read_all(request, Require, LB).await,
        refused(Refusal::Missing)
    );
    assert_eq!(
        read_all(&with_header, Require, stranger).await,
        refused(Refusal::Untrusted)
    );
    assert_eq!(
        read_all(request, Require, stranger).await,
        refused(Refusal::Untrusted)
    );
    // LOCAL (a health check) keeps the load balancer as the client.
    let local = v2(Command::Local, "0.0.0.0:0", "0.0.0.0:0");
    assert_eq!(
        read_all(&[&local[..], request].concat(), Require, LB).await,
        Ok((request.to_vec(), addr(LB)))
    );
}

#[tokio::test]
async fn a_header_cut_short_or_broken_is_refused() {
    use ProxyProtocol::{Accept, Require};
    for mode in [Accept, Require] {
        assert_eq!(
            read_all(&V1_TCP4[..20], mode, LB).await,
            Err(Closed::Refused(Refusal::Truncated))
        );
        let header = v2(Command::Proxy, "192.0.2.7:1", "198.51.100.1:2");
        assert_eq!(
            read_all(&header[..header.len() - 1], mode, LB).await,
            Err(Closed::Refused(Refusal::Truncated))
        );
        assert_eq!(
            read_all(b"PROXY garbage\r\n", mode, LB).await,
            Err(Closed::Refused(Refusal::Malformed))
        );
        // Nothing at all is a closed connection, not a refusal.
        assert_eq!(read_all(b"", mode, LB).await, Err(Closed::Silently));
    }
}

#[tokio::test]
async fn the_prefix_is_replayed_before_the_socket() {
    let mut io = Rewound::new(Bytes::from_static(b"abc"), &b"def"[..]);
    let mut small = [0u8; 2];
    assert_eq!(io.read(&mut small).await.unwrap(), 2);
    assert_eq!(&small, b"ab");
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"cdef");
}

proptest! {
    #[test]
    fn no_input_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = start(&data);
        for version in [Version::V1, Version::V2] {
            if let Parsed::Complete { len, .. } = parse(version, &data) {
                prop_assert!(len <= data.len());
            }
        }
    }

    #[test]
    fn what_follows_a_header_does_not_change_it(
        tail in proptest::collection::vec(any::<u8>(), 0..64),
        v6 in any::<bool>(),
    ) {
        let header = if v6 {
            v2(Command::Proxy, "[2001:db8::7]:9", "[2001:db8::1]:443")
        } else {
            V1_TCP4.to_vec()
        };
        let Start::Header(version) = start(&header) else { panic!("a signature") };
        let want = parse(version, &header);
        let got = parse(version, &[header.as_slice(), &tail].concat());
        prop_assert_eq!(got, want);
    }
}

/// The first answer that is not `Incomplete` when `data` arrives one byte at a time,
/// as the reader parses again after every read.
fn dribbled(version: Version, data: &[u8]) -> Parsed {
    (1..=data.len())
        .filter(|&n| start(&data[..n]) == Start::Header(version))
        .map(|n| parse(version, &data[..n]))
        .find(|p| *p != Parsed::Incomplete)
        .unwrap_or(Parsed::Incomplete)
}

fn signed_input() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        Just(V1_TCP4.to_vec()),
        Just(b"PROXY UNKNOWN\r\n".to_vec()),
        Just(v2(Command::Proxy, "192.0.2.7:51234", "198.51.100.1:443")),
        Just(v2(Command::Local, "[2001:db8::7]:1", "[2001:db8::1]:2")),
        Just(V1_SIGNATURE.to_vec()),
        Just(V2_SIGNATURE.to_vec()),
    ];
    (
        header,
        any::<prop::sample::Index>(),
        proptest::collection::vec(any::<u8>(), 0..130),
    )
        .prop_map(|(mut header, cut, tail)| {
            // Keep the signature, cut or keep the rest, then anything.
            let sig = if header.starts_with(V1_SIGNATURE) {
                6
            } else {
                12
            };
            let keep = sig + cut.index(header.len() - sig + 1);
            header.truncate(keep);
            header.extend(tail);
            header
        })
}

proptest! {
    #[test]
    fn byte_by_byte_or_at_once_gives_one_answer(data in signed_input()) {
        let Start::Header(version) = start(&data) else { panic!("signed") };
        prop_assert_eq!(dribbled(version, &data), parse(version, &data), "{}", data.escape_ascii());
    }
}
