//! What the writer reads from the payloads it stores, and the Opus header it writes: a VP8
//! frame's key-frame tag and size (RFC 6386 §9.1), an Opus packet's duration from its TOC
//! byte (RFC 6716 §3.1), and the `OpusHead` a WebM Opus track carries as CodecPrivate.

/// Opus always runs at 48 kHz on the RTP clock (RFC 7587) and in WebM.
pub(crate) const OPUS_RATE: u32 = 48_000;
/// VP8 over RTP uses a 90 kHz clock (RFC 7741).
pub(crate) const VIDEO_RATE: u32 = 90_000;
/// The encoder look-ahead an Opus decoder discards at the start (libopus: 312 samples at
/// 48 kHz, 6.5 ms), written as the OpusHead pre-skip and the track's CodecDelay, as
/// browsers' own WebM recorders write it.
pub(crate) const OPUS_PRE_SKIP: u16 = 312;
/// How far before a seek target Opus decoding must start to converge (WebM: 80 ms).
pub(crate) const OPUS_SEEK_PRE_ROLL_NS: u64 = 80_000_000;

/// The width and height of a VP8 key frame, or `None` when `frame` is not one (an
/// inter frame, or too short, or without the key-frame start code).
pub(crate) fn vp8_key_frame_size(frame: &[u8]) -> Option<(u16, u16)> {
    let tag = *frame.first()?;
    if tag & 1 != 0 {
        return None; // inter frame
    }
    if frame.get(3..6)? != [0x9D, 0x01, 0x2A] {
        return None;
    }
    let le = |i: usize| Some(u16::from_le_bytes([*frame.get(i)?, *frame.get(i + 1)?]) & 0x3FFF);
    let (w, h) = (le(6)?, le(8)?);
    (w > 0 && h > 0).then_some((w, h))
}

/// The 19-byte OpusHead (RFC 7845 §5.1): version 1, `channels`, the pre-skip, 48 kHz
/// input, no gain, channel mapping family 0 (mono or stereo).
pub(crate) fn opus_head(channels: u8) -> [u8; 19] {
    let mut h = [0u8; 19];
    h[..8].copy_from_slice(b"OpusHead");
    h[8] = 1;
    h[9] = channels.clamp(1, 2);
    h[10..12].copy_from_slice(&OPUS_PRE_SKIP.to_le_bytes());
    h[12..16].copy_from_slice(&OPUS_RATE.to_le_bytes());
    h
}

/// The duration of an Opus packet in 48 kHz samples ([`crate::media::opus`]); 0 for an
/// empty or malformed packet, and at most 120 ms (RFC 6716: a packet holds no more).
pub(crate) fn opus_packet_samples(packet: &[u8]) -> u32 {
    crate::media::opus::packet_samples(packet).map_or(0, |s| s.min(5760))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vp8_key_frame_gives_its_size_and_an_inter_frame_none() {
        // Frame tag (key, version 0, shown, first partition size), start code, 320x240.
        let key = [
            0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00, 0x00,
        ];
        assert_eq!(vp8_key_frame_size(&key), Some((320, 240)));
        // The scale bits (top two) are not part of the size.
        let scaled = [0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0xC1, 0xF0, 0x40];
        assert_eq!(vp8_key_frame_size(&scaled), Some((320, 240)));
        let mut inter = key;
        inter[0] |= 1;
        assert_eq!(vp8_key_frame_size(&inter), None);
        assert_eq!(vp8_key_frame_size(&key[..7]), None, "too short");
        assert_eq!(vp8_key_frame_size(&[]), None);
        let mut no_code = key;
        no_code[4] = 0;
        assert_eq!(vp8_key_frame_size(&no_code), None);
    }

    #[test]
    fn opus_durations_follow_the_toc() {
        assert_eq!(
            opus_packet_samples(&[0xFC, 0, 0]),
            960,
            "CELT FB 20 ms, 1 frame"
        );
        assert_eq!(opus_packet_samples(&[0x78, 0]), 960, "hybrid SWB 20 ms");
        assert_eq!(opus_packet_samples(&[0x08]), 960, "SILK NB 20 ms");
        assert_eq!(
            opus_packet_samples(&[0x18 | 1]),
            5760,
            "SILK 60 ms, 2 frames"
        );
        assert_eq!(
            opus_packet_samples(&[0xE0 | 3, 4]),
            480,
            "CELT 2.5 ms, 4 frames"
        );
        assert_eq!(opus_packet_samples(&[0xE3, 0x3F]), 5760, "capped at 120 ms");
        assert_eq!(opus_packet_samples(&[0xE3]), 0, "code 3 without its count");
        assert_eq!(opus_packet_samples(&[]), 0);
    }

    #[test]
    fn opus_head_is_version_1_with_the_pre_skip() {
        let h = opus_head(2);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!((h[8], h[9]), (1, 2));
        assert_eq!(u16::from_le_bytes([h[10], h[11]]), 312);
        assert_eq!(u32::from_le_bytes([h[12], h[13], h[14], h[15]]), 48_000);
        assert_eq!(&h[16..], [0, 0, 0]);
        assert_eq!(
            opus_head(9)[9],
            2,
            "channel mapping family 0 is mono or stereo"
        );
    }
}
