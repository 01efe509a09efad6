//! Builds ICMP and ICMPv6 echo requests, as the lab's probes and the tests
//! send them (the probes decode echoes in `event`): the message with its
//! identifier, sequence and data, and for ICMPv4 its RFC 1071 checksum (the
//! kernel computes ICMPv6's, which covers a pseudo-header).

/// An echo request (ICMP type 8, or ICMPv6 type 128 when not `v4`).
pub fn build_echo_request(v4: bool, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + data.len());
    m.extend_from_slice(&[if v4 { 8 } else { 128 }, 0, 0, 0]);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    if v4 {
        let sum = internet_checksum(&m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    m
}

/// RFC 1071: the one's complement of the one's complement sum of 16-bit words.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checksummed() {
        // RFC 1071's example: the sum of these words is 0xddf2.
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        let request = build_echo_request(true, 0xbeef, 1, b"abc");
        assert_eq!(&request[..2], &[8, 0]);
        assert_eq!(
            internet_checksum(&request),
            0,
            "a checksummed message sums to zero"
        );
        assert_eq!(&request[4..], &[0xbe, 0xef, 0, 1, b'a', b'b', b'c']);
        let v6 = build_echo_request(false, 7, 2, b"");
        assert_eq!(
            v6,
            [128, 0, 0, 0, 0, 7, 0, 2],
            "the kernel checksums ICMPv6"
        );
    }
}
