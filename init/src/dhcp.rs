//! A DHCPv4 client (RFC 2131) for the one interface of a cloud VM: DISCOVER,
//! OFFER, REQUEST, ACK, with the broadcast flag set so that replies reach
//! an interface that has no address yet. The lease is not renewed: a cloud
//! binds the address to the VM's network interface for its lifetime, and
//! the worker only serves on it.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed part of a message, up to and including the magic cookie.
const FIXED: usize = 240;

/// Message types (option 53).
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// Options (RFC 2132).
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_MTU: u8 = 26;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETERS: u8 = 55;
const OPT_PAD: u8 = 0;
const OPT_END: u8 = 255;

/// What the server assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    pub address: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub server: Ipv4Addr,
    pub seconds: Option<u32>,
}

/// A reply, parsed.
#[derive(Debug)]
struct Reply {
    kind: u8,
    xid: u32,
    chaddr: [u8; 6],
    lease: Lease,
}

/// A client message of `kind` for the interface with hardware address
/// `mac`; a REQUEST names the offer it takes.
fn message(kind: u8, xid: u32, mac: [u8; 6], offer: Option<&Lease>) -> Vec<u8> {
    let mut m = vec![0u8; FIXED];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10..12].copy_from_slice(&0x8000u16.to_be_bytes()); // reply by broadcast
    m[28..34].copy_from_slice(&mac);
    m[236..240].copy_from_slice(&MAGIC_COOKIE);
    m.extend([OPT_MESSAGE_TYPE, 1, kind]);
    if let Some(offer) = offer {
        m.extend([OPT_REQUESTED_IP, 4]);
        m.extend(offer.address.octets());
        m.extend([OPT_SERVER_ID, 4]);
        m.extend(offer.server.octets());
    }
    m.extend([
        OPT_PARAMETERS,
        4,
        OPT_SUBNET_MASK,
        OPT_ROUTER,
        OPT_MTU,
        OPT_LEASE_TIME,
    ]);
    m.push(OPT_END);
    m
}

/// Parse a server's reply; `None` for what is not a well-formed BOOTREPLY
/// with a message type (other traffic on port 68 is ignored, never fatal).
fn parse(m: &[u8]) -> Option<Reply> {
    if m.len() < FIXED || m[0] != 2 || m[236..240] != MAGIC_COOKIE {
        return None;
    }
    let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let mut kind = None;
    let mut lease = Lease {
        address: ip(&m[16..20]),
        netmask: Ipv4Addr::UNSPECIFIED,
        router: None,
        mtu: None,
        server: ip(&m[20..24]),
        seconds: None,
    };
    let mut options = &m[FIXED..];
    while let Some((&code, rest)) = options.split_first() {
        match code {
            OPT_PAD => {
                options = rest;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        options = &rest[usize::from(len)..];
        match (code, value.len()) {
            (OPT_MESSAGE_TYPE, 1) => kind = Some(value[0]),
            (OPT_SUBNET_MASK, 4) => lease.netmask = ip(value),
            (OPT_ROUTER, n) if n >= 4 && n % 4 == 0 => lease.router = Some(ip(value)),
            (OPT_MTU, 2) => lease.mtu = Some(u16::from_be_bytes([value[0], value[1]])),
            (OPT_SERVER_ID, 4) => lease.server = ip(value),
            (OPT_LEASE_TIME, 4) => {
                lease.seconds = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]));
            }
            _ => {}
        }
    }
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&m[28..34]);
    Some(Reply {
        kind: kind?,
        xid: u32::from_be_bytes([m[4], m[5], m[6], m[7]]),
        chaddr,
        lease,
    })
}

/// Ask for a lease on `interface` (up, without an address) whose hardware
/// address is `mac`, retrying for up to `timeout`.
pub(crate) fn lease(interface: &str, mac: [u8; 6], timeout: Duration) -> Result<Lease> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, CLIENT_PORT))
        .context("binding UDP port 68 for DHCP")?;
    socket.set_broadcast(true)?;
    crate::sys::bind_to_device(&socket, interface)
        .with_context(|| format!("binding the DHCP socket to {interface}"))?;
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
    let deadline = Instant::now() + timeout;
    let mut xid = transaction_id(&mac);
    let mut buf = [0u8; 1500];
    socket.set_read_timeout(Some(Duration::from_millis(250)))?;
    // DISCOVER until an OFFER, then REQUEST it until its ACK; a NAK or
    // silence starts over with a new transaction.
    while Instant::now() < deadline {
        xid = xid.wrapping_add(1);
        let mut offer = None;
        let mut sent = Instant::now() - Duration::from_secs(60);
        let mut tries = 0;
        while Instant::now() < deadline && tries < 8 {
            if sent.elapsed() >= Duration::from_secs(2) {
                let m = message(
                    if offer.is_some() { REQUEST } else { DISCOVER },
                    xid,
                    mac,
                    offer.as_ref(),
                );
                socket
                    .send_to(&m, server)
                    .context("sending a DHCP message")?;
                sent = Instant::now();
                tries += 1;
            }
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e).context("receiving a DHCP reply"),
            };
            let Some(reply) = parse(&buf[..n]) else {
                continue;
            };
            if reply.xid != xid || reply.chaddr != mac {
                continue;
            }
            match (reply.kind, &offer) {
                (OFFER, None) if usable(&reply.lease) => {
                    offer = Some(reply.lease);
                    sent = Instant::now() - Duration::from_secs(60);
                    tries = 0;
                }
                (ACK, Some(o)) if reply.lease.address == o.address && usable(&reply.lease) => {
                    return Ok(reply.lease);
                }
                (NAK, Some(_)) => break,
                _ => {}
            }
        }
    }
    bail!("no DHCP lease on {interface} within {timeout:?}")
}

/// An address a host can take: unicast, with a netmask.
fn usable(lease: &Lease) -> bool {
    let a = lease.address;
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
        && lease.netmask != Ipv4Addr::UNSPECIFIED
}

/// A transaction id that differs between boots and VMs.
fn transaction_id(mac: &[u8; 6]) -> u32 {
    let mut seed = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .is_err()
    {
        seed.copy_from_slice(&mac[2..6]);
    }
    u32::from_ne_bytes(seed)
}

/// The hardware address in /sys/class/net/IFACE/address.
pub(crate) fn mac_address(interface: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{interface}/address");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_mac(&text).with_context(|| format!("{path}: {text:?} is not an Ethernet address"))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server's reply to `request`, as slirp or a cloud would send it.
    fn reply(request: &[u8], kind: u8, options: &[u8]) -> Vec<u8> {
        let mut m = request[..FIXED].to_vec();
        m[0] = 2;
        m[16..20].copy_from_slice(&[10, 0, 2, 15]);
        m.extend([OPT_MESSAGE_TYPE, 1, kind, OPT_PAD]);
        m.extend(options);
        m.push(OPT_END);
        m
    }

    #[test]
    fn requests_say_what_they_ask_for() {
        let offer = Lease {
            address: Ipv4Addr::new(10, 0, 2, 15),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            mtu: None,
            server: Ipv4Addr::new(10, 0, 2, 2),
            seconds: None,
        };
        let m = message(REQUEST, 7, MAC, Some(&offer));
        assert_eq!(&m[..4], &[1, 1, 6, 0]);
        assert_eq!(&m[4..8], &7u32.to_be_bytes());
        assert_eq!(&m[10..12], &[0x80, 0]);
        assert_eq!(&m[28..34], &MAC);
        assert_eq!(&m[236..240], &MAGIC_COOKIE);
        let opts = &m[FIXED..];
        assert_eq!(&opts[..3], &[OPT_MESSAGE_TYPE, 1, REQUEST]);
        assert_eq!(&opts[3..9], &[OPT_REQUESTED_IP, 4, 10, 0, 2, 15]);
        assert_eq!(&opts[9..15], &[OPT_SERVER_ID, 4, 10, 0, 2, 2]);
        assert_eq!(*opts.last().unwrap(), OPT_END);
    }

    #[test]
    fn replies_are_parsed() {
        let request = message(DISCOVER, 9, MAC, None);
        let r = parse(&reply(
            &request,
            OFFER,
            &[
                OPT_SUBNET_MASK,
                4,
                255,
                255,
                255,
                255, //
                OPT_ROUTER,
                8,
                10,
                0,
                2,
                1,
                10,
                0,
                2,
                9, //
                OPT_MTU,
                2,
                0x05,
                0xb4, //
                OPT_SERVER_ID,
                4,
                169,
                254,
                169,
                254, //
                OPT_LEASE_TIME,
                4,
                0,
                1,
                0x51,
                0x80, //
                99,
                3,
                1,
                2,
                3, // unknown, skipped
            ],
        ))
        .unwrap();
        assert_eq!((r.kind, r.xid, r.chaddr), (OFFER, 9, MAC));
        assert_eq!(
            r.lease,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                netmask: Ipv4Addr::BROADCAST,
                router: Some(Ipv4Addr::new(10, 0, 2, 1)),
                mtu: Some(1460),
                server: Ipv4Addr::new(169, 254, 169, 254),
                seconds: Some(86400),
            }
        );
    }

    #[test]
    fn what_is_not_a_reply_is_ignored_whatever_its_bytes() {
        let request = message(DISCOVER, 9, MAC, None);
        assert!(parse(&request).is_none(), "a request is not a reply");
        assert!(parse(&[2; 100]).is_none());
        let good = reply(&request, ACK, &[OPT_SUBNET_MASK, 4, 255, 0, 0, 0]);
        // Every truncation and every option length byte set to 255 parse
        // to a reply or to nothing, never a panic.
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
            let mut bad = good.clone();
            bad[n] = 255;
            let _ = parse(&bad);
        }
        // An option that runs past the end is not taken.
        let mut cut = reply(&request, ACK, &[]);
        cut.pop();
        cut.extend([OPT_SUBNET_MASK, 4, 255]);
        assert!(parse(&cut).is_none());
    }

    #[test]
    fn mac_addresses() {
        assert_eq!(parse_mac("52:54:00:12:34:56\n"), Some(MAC));
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:zz",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
