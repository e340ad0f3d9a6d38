//! The NFLOG netlink wire format (linux/netfilter/nfnetlink_log.h): the
//! configuration request that binds a group, the kernel's acknowledgement,
//! and packet messages read as the kernel's audit of a packet shows one.

use std::io::{Error, ErrorKind, Result};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

/// `NFNL_SUBSYS_ULOG << 8`, and its message types (linux/netfilter/nfnetlink_log.h).
const ULOG: u16 = 4 << 8;
const MSG_PACKET: u16 = 0;
const MSG_CONFIG: u16 = 1;
const CFG_CMD: u16 = 1;
const CFG_MODE: u16 = 2;
const CMD_BIND: u8 = 1;
const COPY_PACKET: u8 = 2;
/// Bytes of each packet copied: its headers.
const COPY_RANGE: u32 = 128;
const ATTR_MARK: u16 = 2;
const ATTR_INDEV: u16 = 4;
const ATTR_OUTDEV: u16 = 5;
const ATTR_PAYLOAD: u16 = 9;
const ATTR_PREFIX: u16 = 10;

/// The request that binds NFLOG group `group` and asks for each packet's
/// headers.
pub(super) fn bind_request(group: u16) -> Vec<u8> {
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[COPY_PACKET, 0]);
    config_message(group, &[(CFG_CMD, &[CMD_BIND]), (CFG_MODE, &mode)])
}

/// An NFLOG configuration request for `group` with these attributes.
fn config_message(group: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = vec![libc::AF_UNSPEC as u8, 0];
    body.extend_from_slice(&group.to_be_bytes());
    for (kind, value) in attrs {
        let len = 4 + value.len();
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&(ULOG | MSG_CONFIG).to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// Reads the kernel's answer to a request: its error, if any.
pub(super) fn expect_ack(socket: &OwnedFd) -> Result<()> {
    let mut buf = [0u8; 4096];
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        return Err(Error::last_os_error());
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind != libc::NLMSG_ERROR as u16 {
        return Err(Error::new(ErrorKind::InvalidData, "no acknowledgement"));
    }
    match i32::from_ne_bytes(buf[16..20].try_into().expect("four bytes")) {
        0 => Ok(()),
        errno => Err(Error::from_raw_os_error(-errno)),
    }
}

/// The netlink messages of one receive: a record body per packet.
pub(super) fn parse_messages(mut buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[..4].try_into().expect("four bytes")) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == ULOG | MSG_PACKET && len >= 20 {
            out.extend(parse_packet(buf[16], &buf[20..len]));
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

/// One NFLOG packet message (`family`, then its attributes) as the body
/// of a record shaped as the kernel's NETFILTER_PKT.
fn parse_packet(family: u8, mut attrs: &[u8]) -> Option<String> {
    let (mut mark, mut indev, mut outdev, mut payload, mut prefix) = (0, None, None, None, None);
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        let be32 = || {
            value
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("four")))
        };
        match kind {
            ATTR_MARK => mark = be32().unwrap_or(0),
            ATTR_INDEV => indev = be32(),
            ATTR_OUTDEV => outdev = be32(),
            ATTR_PAYLOAD => payload = Some(value),
            ATTR_PREFIX => prefix = Some(value.split(|&b| b == 0).next().unwrap_or(value)),
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    let mut fields = vec![format!("mark={mark:#x}")];
    fields.extend(addresses(family, payload?)?);
    fields.extend(indev.map(|i| format!("indev={i}")));
    fields.extend(outdev.map(|i| format!("outdev={i}")));
    let prefix = prefix.filter(|p| !p.is_empty());
    fields.extend(prefix.map(|p| format!("prefix={}", ptags_audit::encode_untrusted(p))));
    Some(fields.join(" "))
}

/// `saddr daddr proto` and, for TCP, UDP, UDP-Lite, SCTP and DCCP,
/// `sport dport`, as the kernel's audit of a packet gives them.
fn addresses(family: u8, packet: &[u8]) -> Option<Vec<String>> {
    let (saddr, daddr, proto, l4) = match i32::from(family) {
        libc::AF_INET => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            let s: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                Ipv4Addr::from(s).to_string(),
                Ipv4Addr::from(d).to_string(),
                *packet.get(9)?,
                packet.get(ihl..).unwrap_or_default(),
            )
        }
        libc::AF_INET6 => {
            let s: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                Ipv6Addr::from(s).to_string(),
                Ipv6Addr::from(d).to_string(),
                *packet.get(6)?,
                packet.get(40..).unwrap_or_default(),
            )
        }
        _ => return None,
    };
    let mut fields = vec![
        format!("saddr={saddr}"),
        format!("daddr={daddr}"),
        format!("proto={proto}"),
    ];
    if matches!(proto, 6 | 17 | 33 | 132 | 136) && l4.len() >= 4 {
        fields.push(format!("sport={}", u16::from_be_bytes([l4[0], l4[1]])));
        fields.push(format!("dport={}", u16::from_be_bytes([l4[2], l4[3]])));
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    #[test]
    fn a_udp_packet_reads_as_the_kernel_audits_one() {
        let mut ip = vec![
            0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip.extend_from_slice(&[0x30, 0x39, 0, 9, 0, 12, 0, 0]);
        let mut attrs = attr(ATTR_MARK, &7u32.to_be_bytes());
        attrs.extend(attr(ATTR_OUTDEV, &1u32.to_be_bytes()));
        attrs.extend(attr(ATTR_PAYLOAD, &ip));
        attrs.extend(attr(ATTR_PREFIX, b"ptags\0"));
        let body = parse_packet(libc::AF_INET as u8, &attrs).unwrap();
        assert_eq!(
            body,
            "mark=0x7 saddr=10.0.0.1 daddr=10.0.0.2 proto=17 sport=12345 dport=9 outdev=1 prefix=\"ptags\""
        );
        // Wrapped in a netlink message, among others.
        let mut msg = Vec::new();
        let len = 16 + 4 + attrs.len();
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&(ULOG | MSG_PACKET).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 7]);
        msg.extend_from_slice(&attrs);
        let mut two = msg.clone();
        two.extend_from_slice(&msg);
        assert_eq!(parse_messages(&two), [body.clone(), body]);
    }

    #[test]
    fn truncated_or_foreign_input_is_skipped() {
        assert!(parse_messages(&[1, 2, 3]).is_empty());
        assert!(parse_messages(&[255; 64]).is_empty());
        assert_eq!(
            parse_packet(libc::AF_INET as u8, &attr(ATTR_PAYLOAD, &[0x45, 0])),
            None
        );
        assert_eq!(parse_packet(99, &attr(ATTR_PAYLOAD, &[0; 40])), None);
        let v6 = {
            let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
            p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            p
        };
        assert_eq!(
            parse_packet(libc::AF_INET6 as u8, &attr(ATTR_PAYLOAD, &v6)).unwrap(),
            "mark=0x0 saddr=::1 daddr=::1 proto=58"
        );
    }

    #[test]
    fn a_config_request_is_laid_out_as_nfnetlink_wants() {
        let m = config_message(7, &[(CFG_CMD, &[CMD_BIND])]);
        assert_eq!(m.len(), 16 + 4 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0401);
        assert_eq!(&m[16..20], &[0, 0, 0, 7]);
        assert_eq!(&m[20..25], &[5, 0, 1, 0, 1]);
    }
}
