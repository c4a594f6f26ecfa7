//! Values as the kernel holds them in registers and set keys: addresses and ports in
//! network byte order, marks and other `meta`/`ct` integers in host byte order, interface
//! names NUL-padded to 16 bytes. Used for `cmp` and `immediate` data and set elements.

use std::net::{Ipv4Addr, Ipv6Addr};

/// `IFNAMSIZ`: interface names occupy 16 bytes in registers.
pub const IFNAME_LEN: usize = 16;

pub fn ipv4(addr: Ipv4Addr) -> Vec<u8> {
    addr.octets().to_vec()
}

pub fn ipv6(addr: Ipv6Addr) -> Vec<u8> {
    addr.octets().to_vec()
}

/// An interface name, NUL-padded to 16 bytes (longer names are cut, as the kernel's are).
pub fn ifname(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.truncate(IFNAME_LEN - 1);
    v.resize(IFNAME_LEN, 0);
    v
}

/// An interface-name prefix (`iifname "eth*"`): the name without padding, matched on its
/// own length.
pub fn ifname_prefix(prefix: &str) -> Vec<u8> {
    prefix.as_bytes().to_vec()
}

/// A 32-bit value in host byte order: marks, uid, gid, ct state bits, numgen results.
pub fn u32_host(v: u32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// A 32-bit value in network byte order.
pub fn u32_be(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// A 64-bit value in host byte order (the cgroup v2 id of `socket cgroupv2`).
pub fn u64_host(v: u64) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// A transport port, network byte order.
pub fn port(p: u16) -> Vec<u8> {
    p.to_be_bytes().to_vec()
}

/// One byte: an IP protocol number (`meta l4proto`), an `nfproto`, an ICMP type.
pub fn byte(v: u8) -> Vec<u8> {
    vec![v]
}

/// A concatenation (`a . b`): each field padded to a multiple of 4 bytes, as fields sit
/// in consecutive 32-bit registers.
pub fn concat(fields: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in fields {
        v.extend_from_slice(f);
        v.resize(v.len().div_ceil(4) * 4, 0);
    }
    v
}

/// `meta nfproto` values.
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

/// IP protocol numbers (`meta l4proto`).
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// `ct state` bits.
pub const CT_STATE_INVALID: u32 = 1;
pub const CT_STATE_ESTABLISHED: u32 = 2;
pub const CT_STATE_RELATED: u32 = 4;
pub const CT_STATE_NEW: u32 = 8;
pub const CT_STATE_UNTRACKED: u32 = 0x40;

/// `ct direction` values.
pub const CT_DIR_ORIGINAL: u8 = 0;
pub const CT_DIR_REPLY: u8 = 1;

/// `fib ... type` results (`RTN_*`), host byte order u32.
pub const RTN_UNICAST: u32 = 1;
pub const RTN_LOCAL: u32 = 2;
pub const RTN_BROADCAST: u32 = 3;
pub const RTN_ANYCAST: u32 = 4;
pub const RTN_MULTICAST: u32 = 5;
pub const RTN_BLACKHOLE: u32 = 6;
pub const RTN_UNREACHABLE: u32 = 7;
pub const RTN_PROHIBIT: u32 = 8;

/// ICMPv6 types.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_kernels_byte_order() {
        assert_eq!(ipv4(Ipv4Addr::new(192, 0, 2, 53)), [192, 0, 2, 53]);
        assert_eq!(port(53), [0, 53]);
        assert_eq!(u32_host(0x0100_0000), 0x0100_0000u32.to_ne_bytes());
        assert_eq!(ifname("eth0"), b"eth0\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(ifname("a-very-long-interface-name").len(), IFNAME_LEN);
        assert_eq!(
            concat(&[&ipv4(Ipv4Addr::new(10, 0, 0, 1)), &port(443)]),
            [10, 0, 0, 1, 1, 187, 0, 0]
        );
    }
}
