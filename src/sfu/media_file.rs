//! Tiny readers for pre-encoded media the [`super::synthetic`] participant plays: VP8
//! frames from an IVF file and Opus packets from an Ogg file (both as Debian's ffmpeg
//! writes them). Whole files in memory; no seeking, no CRC check (the files are ours).

use std::sync::Arc;

/// One VP8 frame and its RTP time (90 kHz) from the start of the file.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub rtp_time: u64,
    pub keyframe: bool,
    pub data: Arc<[u8]>,
}

/// One Opus packet and its RTP time (48 kHz) from the start of the file.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    pub rtp_time: u64,
    pub data: Arc<[u8]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaFileError {
    #[error("not an IVF file (no DKIF header)")]
    NotIvf,
    #[error("the IVF file is not VP8 ({0})")]
    NotVp8(String),
    #[error("not an Ogg file (no OggS page)")]
    NotOgg,
    #[error("the Ogg stream is not Opus")]
    NotOpus,
    #[error("the file ends inside a {0}")]
    Truncated(&'static str),
    #[error("the file holds no media")]
    Empty,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The VP8 frames of an IVF file, with their times on a 90 kHz clock.
pub fn read_ivf(bytes: &[u8]) -> Result<Vec<VideoFrame>, MediaFileError> {
    if bytes.get(..4) != Some(b"DKIF") {
        return Err(MediaFileError::NotIvf);
    }
    let header_len = usize::from(le16(bytes, 6).ok_or(MediaFileError::Truncated("header"))?);
    let fourcc = bytes
        .get(8..12)
        .ok_or(MediaFileError::Truncated("header"))?;
    if fourcc != b"VP80" {
        return Err(MediaFileError::NotVp8(
            String::from_utf8_lossy(fourcc).into(),
        ));
    }
    // Time base: `rate` units per second, each frame's pts counted in `scale`s.
    let rate = u64::from(le32(bytes, 16).ok_or(MediaFileError::Truncated("header"))?).max(1);
    let scale = u64::from(le32(bytes, 20).ok_or(MediaFileError::Truncated("header"))?).max(1);
    let mut frames = Vec::new();
    let mut at = header_len.max(32);
    while at < bytes.len() {
        let size = le32(bytes, at).ok_or(MediaFileError::Truncated("frame header"))? as usize;
        let pts = le64(bytes, at + 4).ok_or(MediaFileError::Truncated("frame header"))?;
        let data = bytes
            .get(at + 12..at + 12 + size)
            .ok_or(MediaFileError::Truncated("frame"))?;
        frames.push(VideoFrame {
            rtp_time: pts.saturating_mul(90_000).saturating_mul(scale) / rate,
            // VP8 frame tag (RFC 6386 §9.1): bit 0 is 0 for a key frame.
            keyframe: data.first().is_some_and(|b| b & 1 == 0),
            data: data.into(),
        });
        at += 12 + size;
    }
    if frames.is_empty() {
        return Err(MediaFileError::Empty);
    }
    Ok(frames)
}

/// The Opus audio packets of an Ogg file (its first logical stream), with their times on
/// a 48 kHz clock from each packet's own duration (its TOC byte).
pub fn read_ogg_opus(bytes: &[u8]) -> Result<Vec<AudioPacket>, MediaFileError> {
    let packets = ogg_packets(bytes)?;
    let mut iter = packets.into_iter();
    match iter.next() {
        Some(head) if head.starts_with(b"OpusHead") => {}
        _ => return Err(MediaFileError::NotOpus),
    }
    let mut out = Vec::new();
    let mut time = 0u64;
    for p in iter.filter(|p| !p.starts_with(b"OpusTags")) {
        let Some(samples) = opus_samples(&p) else {
            continue;
        };
        out.push(AudioPacket {
            rtp_time: time,
            data: p.into(),
        });
        time += u64::from(samples);
    }
    if out.is_empty() {
        return Err(MediaFileError::Empty);
    }
    Ok(out)
}

/// The packets of an Ogg bitstream (RFC 3533), joined across pages by their lacing.
fn ogg_packets(bytes: &[u8]) -> Result<Vec<Vec<u8>>, MediaFileError> {
    if bytes.get(..4) != Some(b"OggS") {
        return Err(MediaFileError::NotOgg);
    }
    let mut packets = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut serial = None;
    let mut at = 0;
    while at < bytes.len() {
        if bytes.get(at..at + 4) != Some(b"OggS") {
            return Err(MediaFileError::NotOgg);
        }
        let page_serial = le32(bytes, at + 14).ok_or(MediaFileError::Truncated("page"))?;
        let segments = usize::from(
            *bytes
                .get(at + 26)
                .ok_or(MediaFileError::Truncated("page"))?,
        );
        let table = bytes
            .get(at + 27..at + 27 + segments)
            .ok_or(MediaFileError::Truncated("page"))?;
        let mut body = at + 27 + segments;
        let ours = *serial.get_or_insert(page_serial) == page_serial;
        for &lace in table {
            let len = usize::from(lace);
            let seg = bytes
                .get(body..body + len)
                .ok_or(MediaFileError::Truncated("page"))?;
            body += len;
            if !ours {
                continue;
            }
            partial.extend_from_slice(seg);
            if lace < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        at = body;
    }
    Ok(packets)
}

/// An Opus packet's duration in 48 kHz samples, from its TOC byte (RFC 6716 §3.1).
pub fn opus_samples(packet: &[u8]) -> Option<u32> {
    crate::media::opus::packet_samples(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ivf(frames: &[&[u8]]) -> Vec<u8> {
        let mut b = b"DKIF".to_vec();
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&32u16.to_le_bytes());
        b.extend_from_slice(b"VP80");
        b.extend_from_slice(&640u16.to_le_bytes());
        b.extend_from_slice(&360u16.to_le_bytes());
        b.extend_from_slice(&30u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for (i, f) in frames.iter().enumerate() {
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(i as u64).to_le_bytes());
            b.extend_from_slice(f);
        }
        b
    }

    fn page(serial: u32, packets: &[&[u8]]) -> Vec<u8> {
        let mut table = Vec::new();
        let mut body = Vec::new();
        for p in packets {
            let mut n = p.len();
            while n >= 255 {
                table.push(255u8);
                n -= 255;
            }
            table.push(n as u8);
            body.extend_from_slice(p);
        }
        let mut b = b"OggS".to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&serial.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(table.len() as u8);
        b.extend_from_slice(&table);
        b.extend_from_slice(&body);
        b
    }

    #[test]
    fn ivf_frames_carry_90khz_times_and_keyframe_flags() {
        let frames = read_ivf(&ivf(&[&[0x10, 1, 2], &[0x11, 3], &[0x31]])).unwrap();
        let times: Vec<u64> = frames.iter().map(|f| f.rtp_time).collect();
        assert_eq!(times, [0, 3_000, 6_000]);
        let keys: Vec<bool> = frames.iter().map(|f| f.keyframe).collect();
        assert_eq!(keys, [true, false, false]);
        assert_eq!(&*frames[0].data, &[0x10, 1, 2]);
    }

    #[test]
    fn bad_ivf_is_refused_not_panicked_on() {
        assert_eq!(read_ivf(b"RIFF").unwrap_err(), MediaFileError::NotIvf);
        let mut cut = ivf(&[&[0x10; 100]]);
        cut.truncate(cut.len() - 1);
        assert_eq!(
            read_ivf(&cut).unwrap_err(),
            MediaFileError::Truncated("frame")
        );
        assert_eq!(read_ivf(&ivf(&[])).unwrap_err(), MediaFileError::Empty);
    }

    #[test]
    fn ogg_packets_join_across_lacing_and_get_their_durations() {
        let big = vec![0x78u8; 300]; // config 15 (hybrid 20 ms), one frame: 960 samples
        let mut file = page(7, &[b"OpusHead\x01\x01"]);
        file.extend(page(7, &[b"OpusTags"]));
        file.extend(page(9, &[&[0xfc, 1]])); // another stream: ignored
        file.extend(page(7, &[&big, &[0xfc, 2]])); // CELT 20 ms
        let packets = read_ogg_opus(&file).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].data.len(), 300);
        assert_eq!((packets[0].rtp_time, packets[1].rtp_time), (0, 960));
        assert_eq!(
            read_ogg_opus(b"OggS").unwrap_err(),
            MediaFileError::Truncated("page")
        );
        let vorbis = page(1, &[b"\x01vorbis"]);
        assert_eq!(read_ogg_opus(&vorbis).unwrap_err(), MediaFileError::NotOpus);
    }

    #[test]
    fn opus_durations_follow_the_toc() {
        assert_eq!(opus_samples(&[0xfc]), Some(960)); // CELT FB 20 ms, one frame
        assert_eq!(opus_samples(&[0xfd]), Some(1920)); // two frames
        assert_eq!(opus_samples(&[0xff, 3]), Some(2880)); // code 3, three frames
        assert_eq!(opus_samples(&[0x08]), Some(960)); // SILK NB 20 ms
        assert_eq!(opus_samples(&[]), None);
    }
}
