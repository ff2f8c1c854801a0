//! Zero-copy RTP (RFC 3550) and RTCP header views over a receive buffer.
//!
//! [`RtpView`] validates a datagram once (version, CSRC list, extension and padding
//! lengths) and then reads fields in place; [`RtpViewMut`] adds setters that rewrite the
//! sequence number, timestamp, SSRC, payload type and marker bit in the same buffer, which
//! is what the relay does to every forwarded packet. Nothing here allocates.
//!
//! [`classify`] tells RTP from RTCP on a socket that carries both (RFC 5761 `rtcp-mux`) by
//! the second octet: RTCP packet types 192–223 land there, RTP payload types 64–95 (which
//! would collide when the marker bit is set) are never negotiated by this gateway. The
//! range is wider than the classic 200–204 (SR, RR, SDES, BYE, APP) on purpose: feedback
//! (205, 206) and XR (207) are RTCP too, and a 200–204-only check would relay them as RTP.

use thiserror::Error;

/// Length of the fixed RTP header (before CSRCs and extension).
pub const RTP_HEADER_LEN: usize = 12;
/// Length of the common RTCP header including the sender SSRC.
pub const RTCP_HEADER_LEN: usize = 8;

/// Why a datagram is not a usable RTP or RTCP packet.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the header its first octets announce.
    #[error("packet too short: {len} bytes, header needs {need}")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// Bytes the header requires.
        need: usize,
    },
    /// The version field is not 2.
    #[error("unsupported RTP version {0}")]
    BadVersion(u8),
    /// The padding count is zero or runs into the header.
    #[error("bad padding length {padding} with {available} bytes after the header")]
    BadPadding {
        /// The padding count from the last octet.
        padding: usize,
        /// Bytes available after the header.
        available: usize,
    },
    /// An RTCP length field that does not fit the datagram.
    #[error("RTCP length field {words} words does not fit {len} bytes")]
    BadRtcpLength {
        /// The length field (32-bit words minus one).
        words: usize,
        /// Bytes received.
        len: usize,
    },
}

/// What a datagram on a media socket is, judged from its first two octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// RTP (version 2, second octet outside the RTCP range).
    Rtp,
    /// RTCP (version 2, packet type 192–223).
    Rtcp,
    /// Anything else (STUN, DTLS, garbage): not for the relay.
    Other,
}

/// Classifies a datagram per RFC 5761 §4 (and the first-octet ranges of RFC 7983).
pub fn classify(buf: &[u8]) -> PacketKind {
    match buf {
        [b0, b1, ..] if b0 >> 6 == 2 => {
            if (192..=223).contains(b1) {
                PacketKind::Rtcp
            } else {
                PacketKind::Rtp
            }
        }
        _ => PacketKind::Other,
    }
}

/// Byte range of the payload inside the packet, computed once by [`layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    payload_start: usize,
    payload_end: usize,
}

/// Validates an RTP packet and finds its payload.
fn layout(buf: &[u8]) -> Result<Layout, RtpError> {
    let head = buf
        .first_chunk::<RTP_HEADER_LEN>()
        .ok_or(RtpError::TooShort {
            len: buf.len(),
            need: RTP_HEADER_LEN,
        })?;
    let version = head[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let mut start = RTP_HEADER_LEN + 4 * usize::from(head[0] & 0x0f);
    if head[0] & 0x10 != 0 {
        let words = buf
            .get(start + 2..)
            .and_then(<[u8]>::first_chunk::<2>)
            .map(|w| usize::from(be16(*w)))
            .ok_or(RtpError::TooShort {
                len: buf.len(),
                need: start + 4,
            })?;
        start += 4 + 4 * words;
    }
    if buf.len() < start {
        return Err(RtpError::TooShort {
            len: buf.len(),
            need: start,
        });
    }
    let end = if head[0] & 0x20 != 0 {
        let padding = usize::from(buf.last().copied().unwrap_or(0));
        let available = buf.len() - start;
        if padding == 0 || padding > available {
            return Err(RtpError::BadPadding { padding, available });
        }
        buf.len() - padding
    } else {
        buf.len()
    };
    Ok(Layout {
        payload_start: start,
        payload_end: end,
    })
}

fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// A validated, read-only view of an RTP packet in a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    head: &'a [u8; RTP_HEADER_LEN],
    buf: &'a [u8],
    layout: Layout,
}

impl<'a> RtpView<'a> {
    /// Validates `buf` as an RTP packet; never panics, never allocates.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let layout = layout(buf)?;
        let head = buf.first_chunk().ok_or(RtpError::TooShort {
            len: buf.len(),
            need: RTP_HEADER_LEN,
        })?;
        Ok(RtpView { head, buf, layout })
    }

    /// The version field (always 2 for a parsed view).
    pub fn version(&self) -> u8 {
        self.head[0] >> 6
    }

    /// Whether the packet carries padding (already excluded from [`Self::payload`]).
    pub fn has_padding(&self) -> bool {
        self.head[0] & 0x20 != 0
    }

    /// Whether a header extension follows the CSRC list.
    pub fn has_extension(&self) -> bool {
        self.head[0] & 0x10 != 0
    }

    /// Number of CSRC identifiers.
    pub fn csrc_count(&self) -> u8 {
        self.head[0] & 0x0f
    }

    /// The marker bit (start of a talkspurt for audio).
    pub fn marker(&self) -> bool {
        self.head[1] & 0x80 != 0
    }

    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.head[1] & 0x7f
    }

    /// The sequence number.
    pub fn sequence(&self) -> u16 {
        be16([self.head[2], self.head[3]])
    }

    /// The media timestamp.
    pub fn timestamp(&self) -> u32 {
        be32([self.head[4], self.head[5], self.head[6], self.head[7]])
    }

    /// The synchronization source.
    pub fn ssrc(&self) -> u32 {
        be32([self.head[8], self.head[9], self.head[10], self.head[11]])
    }

    /// Bytes of header (fixed, CSRCs and extension) before the payload.
    pub fn header_len(&self) -> usize {
        self.layout.payload_start
    }

    /// The payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        self.buf
            .get(self.layout.payload_start..self.layout.payload_end)
            .unwrap_or(&[])
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// A validated view of an RTP packet that rewrites header fields in place.
#[derive(Debug)]
pub struct RtpViewMut<'a> {
    buf: &'a mut [u8],
    layout: Layout,
}

impl<'a> RtpViewMut<'a> {
    /// Validates `buf` as an RTP packet; never panics, never allocates.
    pub fn parse(buf: &'a mut [u8]) -> Result<Self, RtpError> {
        let layout = layout(buf)?;
        Ok(RtpViewMut { buf, layout })
    }

    /// A read-only view of the same packet.
    pub fn view(&self) -> RtpView<'_> {
        RtpView {
            head: self.head(),
            buf: self.buf,
            layout: self.layout,
        }
    }

    fn head(&self) -> &[u8; RTP_HEADER_LEN] {
        // `layout` proved the buffer holds a full fixed header.
        self.buf.first_chunk().unwrap_or(&[0; RTP_HEADER_LEN])
    }

    fn head_mut(&mut self) -> Option<&mut [u8; RTP_HEADER_LEN]> {
        self.buf.first_chunk_mut()
    }

    /// Sets or clears the marker bit.
    pub fn set_marker(&mut self, marker: bool) {
        if let Some(h) = self.head_mut() {
            h[1] = (h[1] & 0x7f) | if marker { 0x80 } else { 0 };
        }
    }

    /// Sets the payload type (low 7 bits of `pt`), keeping the marker bit.
    pub fn set_payload_type(&mut self, pt: u8) {
        if let Some(h) = self.head_mut() {
            h[1] = (h[1] & 0x80) | (pt & 0x7f);
        }
    }

    /// Sets the sequence number.
    pub fn set_sequence(&mut self, seq: u16) {
        if let Some(h) = self.head_mut() {
            h[2..4].copy_from_slice(&seq.to_be_bytes());
        }
    }

    /// Sets the media timestamp.
    pub fn set_timestamp(&mut self, ts: u32) {
        if let Some(h) = self.head_mut() {
            h[4..8].copy_from_slice(&ts.to_be_bytes());
        }
    }

    /// Sets the synchronization source.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        if let Some(h) = self.head_mut() {
            h[8..12].copy_from_slice(&ssrc.to_be_bytes());
        }
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buf
            .get_mut(self.layout.payload_start..self.layout.payload_end)
            .unwrap_or(&mut [])
    }

    /// Length of the whole packet.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false: a parsed packet holds at least its header.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Writes a minimal RTP header (no CSRC, no extension, no padding) into `buf[..12]`.
///
/// Used for packets the gateway originates (prompts). Returns `None` if `buf` is shorter
/// than a header.
pub fn write_header(
    buf: &mut [u8],
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
) -> Option<()> {
    let h = buf.first_chunk_mut::<RTP_HEADER_LEN>()?;
    h[0] = 0x80;
    h[1] = (pt & 0x7f) | if marker { 0x80 } else { 0 };
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&ts.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(())
}

/// A validated view of the first packet of an RTCP (compound) datagram.
#[derive(Debug, Clone, Copy)]
pub struct RtcpView<'a> {
    head: &'a [u8; RTCP_HEADER_LEN],
    buf: &'a [u8],
}

impl<'a> RtcpView<'a> {
    /// Validates the first RTCP packet of `buf` (version 2, type 192–223, length fits).
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let head = buf
            .first_chunk::<RTCP_HEADER_LEN>()
            .ok_or(RtpError::TooShort {
                len: buf.len(),
                need: RTCP_HEADER_LEN,
            })?;
        let version = head[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let words = usize::from(be16([head[2], head[3]]));
        if (words + 1) * 4 > buf.len() || classify(buf) != PacketKind::Rtcp {
            return Err(RtpError::BadRtcpLength {
                words,
                len: buf.len(),
            });
        }
        Ok(RtcpView { head, buf })
    }

    /// The packet type (200 SR, 201 RR, 202 SDES, 203 BYE, 204 APP, 205/206 feedback…).
    pub fn packet_type(&self) -> u8 {
        self.head[1]
    }

    /// The report count / subtype field.
    pub fn count(&self) -> u8 {
        self.head[0] & 0x1f
    }

    /// The SSRC of the sender of this (first) packet.
    pub fn sender_ssrc(&self) -> u32 {
        be32([self.head[4], self.head[5], self.head[6], self.head[7]])
    }

    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> Vec<u8> {
        let mut p = vec![
            0x80, 0x00, 0x12, 0x34, 0, 0, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ];
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    #[test]
    fn reads_fixed_header() {
        let p = packet();
        let v = RtpView::parse(&p).unwrap();
        assert_eq!(v.version(), 2);
        assert_eq!(v.payload_type(), 0);
        assert!(!v.marker());
        assert_eq!(v.sequence(), 0x1234);
        assert_eq!(v.timestamp(), 256);
        assert_eq!(v.ssrc(), 0xdead_beef);
        assert_eq!(v.payload().len(), 160);
        assert_eq!(v.header_len(), 12);
    }

    #[test]
    fn csrc_extension_and_padding() {
        let mut p = vec![0xb1, 0xe5, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[0, 0, 0, 9]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension, 1 word
        p.extend_from_slice(&[7, 7, 7]); // payload
        p.extend_from_slice(&[0, 0, 3]); // padding of 3
        let v = RtpView::parse(&p).unwrap();
        assert!(v.marker() && v.has_extension() && v.has_padding());
        assert_eq!(v.csrc_count(), 1);
        assert_eq!(v.payload_type(), 101);
        assert_eq!(v.payload(), &[7, 7, 7]);
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            RtpView::parse(&[0x80; 5]),
            Err(RtpError::TooShort { .. })
        ));
        let mut p = packet();
        p[0] = 0x40;
        assert_eq!(RtpView::parse(&p).unwrap_err(), RtpError::BadVersion(1));
        let mut p = packet();
        p[0] = 0x8f; // 15 CSRCs announced, 160 bytes follow: fits; 2 bytes would not
        p.truncate(20);
        assert!(matches!(RtpView::parse(&p), Err(RtpError::TooShort { .. })));
        let mut p = packet();
        p[0] = 0xa0;
        *p.last_mut().unwrap() = 0;
        assert!(matches!(
            RtpView::parse(&p),
            Err(RtpError::BadPadding { .. })
        ));
        let mut p = packet();
        p[0] = 0x90; // extension announced but header ends
        p.truncate(13);
        assert!(RtpView::parse(&p).is_err());
    }

    #[test]
    fn setters_write_in_place() {
        let mut p = packet();
        p[1] = 0x80; // marker set, PT 0
        let mut v = RtpViewMut::parse(&mut p).unwrap();
        v.set_sequence(65535);
        v.set_timestamp(u32::MAX);
        v.set_ssrc(42);
        v.set_payload_type(8);
        assert!(v.view().marker());
        v.set_marker(false);
        let r = v.view();
        assert_eq!(
            (r.sequence(), r.timestamp(), r.ssrc(), r.payload_type()),
            (65535, u32::MAX, 42, 8)
        );
        assert!(!r.marker());
        assert_eq!(v.payload_mut().len(), 160);
    }

    #[test]
    fn classifies_rtcp_and_rtp() {
        assert_eq!(classify(&packet()), PacketKind::Rtp);
        let rr = [0x81, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(classify(&rr), PacketKind::Rtcp);
        assert_eq!(classify(&[0x80, 205]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x00, 0x01]), PacketKind::Other); // STUN
        assert_eq!(classify(&[0x80]), PacketKind::Other);
        let mut rr = rr.to_vec();
        rr.extend_from_slice(&[0; 20]);
        let v = RtcpView::parse(&rr).unwrap();
        assert_eq!((v.packet_type(), v.count(), v.sender_ssrc()), (201, 1, 1));
        assert!(RtcpView::parse(&rr[..20]).is_err());
    }

    #[test]
    fn writes_header() {
        let mut b = [0u8; 20];
        write_header(&mut b, 8, true, 7, 160, 99).unwrap();
        let v = RtpView::parse(&b).unwrap();
        assert_eq!(
            (
                v.payload_type(),
                v.marker(),
                v.sequence(),
                v.timestamp(),
                v.ssrc()
            ),
            (8, true, 7, 160, 99)
        );
        assert!(write_header(&mut b[..4], 0, false, 0, 0, 0).is_none());
    }
}
