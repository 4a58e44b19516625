//! Builds the Ethernet frames the data-plane tests and benchmarks feed to
//! the XDP programs: Ethernet (optionally one 802.1Q tag), ARP, IPv4 (with
//! options and fragment fields), IPv6 (with extension headers), UDP and ESP.
//! The one place frames are built, so a table test and the bench send the
//! same bytes. Builders produce well-formed headers; tests corrupt them
//! afterwards on purpose.

use std::net::{Ipv4Addr, Ipv6Addr};

pub use gateway_common::eth::{ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6};
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_TCP: u8 = 6;
pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_DEST: u8 = 60;

/// Locally administered MACs for test frames.
pub const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// An Ethernet frame carrying `payload`, with an optional 802.1Q VLAN id.
pub fn ethernet(ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    ethernet_to(MAC_DST, MAC_SRC, ethertype, vlan, payload)
}

/// [`ethernet`] with explicit MACs (for frames sent on a real link).
pub fn ethernet_to(
    dst: [u8; 6],
    src: [u8; 6],
    ethertype: u16,
    vlan: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(vid) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Pads a frame to the 60-byte Ethernet minimum, as a NIC does: the IP
/// length fields then say less than the frame holds.
pub fn pad_to_min(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

/// An ARP request (the payload of EtherType 0x0806).
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    a.extend_from_slice(&ETH_P_IP.to_be_bytes());
    a.extend_from_slice(&[6, 4]);
    a.extend_from_slice(&1u16.to_be_bytes()); // request
    a.extend_from_slice(&MAC_SRC);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    a
}

/// An IPv4 header's fields.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// Flags (DF 0x4000, MF 0x2000) and fragment offset in 8-byte units.
    pub flags_fragment: u16,
    /// Options, padded with zeros to a multiple of 4 bytes.
    pub options: Vec<u8>,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Self {
        Self {
            src,
            dst,
            protocol,
            ttl: 64,
            flags_fragment: 0x4000,
            options: Vec::new(),
        }
    }

    /// The IPv4 packet: header (with checksum) then `payload`.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let hlen = 20 + opts.len();
        let total = (hlen + payload.len()) as u16;
        let mut h = Vec::with_capacity(hlen + payload.len());
        h.push(0x40 | (hlen / 4) as u8);
        h.push(0);
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&0x1234u16.to_be_bytes());
        h.extend_from_slice(&self.flags_fragment.to_be_bytes());
        h.push(self.ttl);
        h.push(self.protocol);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&opts);
        let csum = checksum(&h);
        h[10..12].copy_from_slice(&csum.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

/// An IPv6 header's fields.
#[derive(Clone, Debug)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
}

impl Ipv6 {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8) -> Self {
        Self {
            src,
            dst,
            next_header,
            hop_limit: 64,
        }
    }

    /// The IPv6 packet: fixed header then `payload` (extension headers
    /// included, see [`ipv6_ext`]).
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::with_capacity(40 + payload.len());
        h.extend_from_slice(&[0x60, 0, 0, 0]);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.push(self.next_header);
        h.push(self.hop_limit);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(payload);
        h
    }
}

/// A Hop-by-Hop / Routing / Destination Options style extension header of
/// `(len_units + 1) * 8` bytes (padded with PadN-neutral zeros), followed by
/// `rest`.
pub fn ipv6_ext(next_header: u8, len_units: u8, rest: &[u8]) -> Vec<u8> {
    let len = (len_units as usize + 1) * 8;
    let mut e = vec![0u8; len];
    e[0] = next_header;
    e[1] = len_units;
    // PadN option covering the rest of the header.
    e[2] = 1;
    e[3] = (len - 4) as u8;
    e.extend_from_slice(rest);
    e
}

/// An IPv6 Fragment header followed by `rest`.
pub fn ipv6_fragment(next_header: u8, offset_units: u16, more: bool, rest: &[u8]) -> Vec<u8> {
    let mut e = vec![next_header, 0];
    e.extend_from_slice(&((offset_units << 3) | more as u16).to_be_bytes());
    e.extend_from_slice(&0xdead_beefu32.to_be_bytes());
    e.extend_from_slice(rest);
    e
}

/// A UDP datagram (checksum 0: the XDP programs do not verify it).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An ESP packet: SPI, sequence number, then `payload` (IV, ciphertext and
/// ICV: opaque here).
pub fn esp(spi: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(8 + payload.len());
    e.extend_from_slice(&spi.to_be_bytes());
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(payload);
    e
}

/// An IKE-looking payload for UDP 4500: the 4-byte zero non-ESP marker, then
/// a 28-byte IKE header stand-in.
pub fn ike_on_4500() -> Vec<u8> {
    let mut p = vec![0u8; 4];
    p.extend_from_slice(&[0x11; 28]);
    p
}

/// A stand-in for IV + ciphertext + ICV.
pub fn esp_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31)).collect()
}

/// Ethernet + IPv4 + ESP.
pub fn esp_v4(src: Ipv4Addr, dst: Ipv4Addr, spi: u32, seq: u32) -> Vec<u8> {
    let ip = Ipv4::new(src, dst, IPPROTO_ESP).build(&esp(spi, seq, &esp_body(64)));
    ethernet(ETH_P_IP, None, &ip)
}

/// Ethernet + IPv6 + ESP.
pub fn esp_v6(src: Ipv6Addr, dst: Ipv6Addr, spi: u32, seq: u32) -> Vec<u8> {
    let ip = Ipv6::new(src, dst, IPPROTO_ESP).build(&esp(spi, seq, &esp_body(64)));
    ethernet(ETH_P_IPV6, None, &ip)
}

/// Ethernet + IPv4 + UDP(4500 → 4500) + ESP (RFC 3948).
pub fn udp_esp_v4(src: Ipv4Addr, dst: Ipv4Addr, spi: u32, seq: u32) -> Vec<u8> {
    let u = udp(4500, 4500, &esp(spi, seq, &esp_body(64)));
    ethernet(ETH_P_IP, None, &Ipv4::new(src, dst, IPPROTO_UDP).build(&u))
}

/// Ethernet + IPv4 + UDP with the given ports and payload.
pub fn udp_v4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let u = udp(sport, dport, payload);
    ethernet(ETH_P_IP, None, &Ipv4::new(src, dst, IPPROTO_UDP).build(&u))
}

/// Ethernet + IPv6 + UDP with the given ports and payload.
pub fn udp_v6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let u = udp(sport, dport, payload);
    ethernet(
        ETH_P_IPV6,
        None,
        &Ipv6::new(src, dst, IPPROTO_UDP).build(&u),
    )
}

/// The Internet checksum (RFC 1071).
pub use gateway_esp::checksum::checksum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksums_to_zero() {
        let ip = Ipv4::new(Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 1), 50)
            .build(&[1, 2, 3]);
        assert_eq!(checksum(&ip[..20]), 0);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 23);
    }

    #[test]
    fn vlan_tag_and_lengths() {
        let f = ethernet(ETH_P_IPV6, Some(100), &[0xaa]);
        assert_eq!(&f[12..14], &[0x81, 0x00]);
        assert_eq!(&f[14..16], &[0x00, 100]);
        assert_eq!(&f[16..18], &[0x86, 0xdd]);
        assert_eq!(f.len(), 19);
        let e = ipv6_ext(IPPROTO_ESP, 1, &[]);
        assert_eq!(e.len(), 16);
        assert_eq!(udp(1, 2, &[0; 5])[4..6], [0, 13]);
    }
}
