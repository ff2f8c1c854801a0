//! The recording file: RIFF/WAVE holding G.711 exactly as it was sent, stereo, 8 kHz.
//!
//! Layout (58-byte header, then interleaved samples, left first):
//! `RIFF <size> WAVE`, `fmt ` (18 bytes: WAVEFORMATEX with format tag 7 µ-law or 6 A-law,
//! 2 channels, 8000 Hz, 16,000 bytes/s, block align 2, 8 bits, cbSize 0), `fact` (frames),
//! `data <size>`. Three size fields depend on the length; [`sizes`] gives them so a writer
//! can make the header true after every flush, and [`repair`] makes it true from the
//! file's length after a crash. Chromium plays these (its FFmpeg has the G.711 decoders).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub use crate::media::g711::Law;

/// Bytes before the first sample.
pub const HEADER_LEN: u64 = 58;
/// Samples per second per channel.
pub const SAMPLE_RATE: u32 = 8_000;
/// Channels: 0 = the inmate's side (left), 1 = the called party's side (right).
pub const CHANNELS: u16 = 2;

/// The WAV format tag of a law (7 µ-law, 6 A-law).
fn format_tag(law: Law) -> u16 {
    match law {
        Law::Ulaw => 7,
        Law::Alaw => 6,
    }
}

/// The `recordings.format` name of a law.
pub fn format_name(law: Law) -> &'static str {
    match law {
        Law::Ulaw => "wav-pcmu",
        Law::Alaw => "wav-pcma",
    }
}

/// The header for `data_len` bytes of samples.
pub fn header(law: Law, data_len: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let mut w = &mut h[..];
    let block_align = CHANNELS; // one byte per sample
    let fields: [&[u8]; 17] = [
        b"RIFF",
        &riff_size(data_len).to_le_bytes(),
        b"WAVE",
        b"fmt ",
        &18u32.to_le_bytes(),
        &format_tag(law).to_le_bytes(),
        &CHANNELS.to_le_bytes(),
        &SAMPLE_RATE.to_le_bytes(),
        &(SAMPLE_RATE * u32::from(block_align)).to_le_bytes(),
        &block_align.to_le_bytes(),
        &8u16.to_le_bytes(),
        &0u16.to_le_bytes(),
        b"fact",
        &4u32.to_le_bytes(),
        &(data_len / u32::from(block_align)).to_le_bytes(),
        b"data",
        &data_len.to_le_bytes(),
    ];
    for f in fields {
        // The fields add up to exactly HEADER_LEN bytes.
        let _ = w.write_all(f);
    }
    h
}

fn riff_size(data_len: u32) -> u32 {
    (HEADER_LEN as u32 - 8).saturating_add(data_len)
}

/// Rewrites the size fields of the header at the start of `file` for `data_len` bytes.
pub fn write_sizes(file: &File, law: Law, data_len: u32) -> io::Result<()> {
    file.write_all_at(&header(law, data_len), 0)
}

/// The data length a file of `file_len` bytes holds (whole stereo frames only).
pub fn data_len_of(file_len: u64) -> u32 {
    let data = file_len.saturating_sub(HEADER_LEN);
    let whole = data - data % u64::from(CHANNELS);
    u32::try_from(whole).unwrap_or(u32::MAX - 1)
}

/// A parsed header: what [`read`] and [`repair`] need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub law: Law,
    pub data_len: u32,
}

impl Header {
    /// Stereo frames (samples per channel) the data chunk holds.
    pub fn frames(&self) -> u64 {
        u64::from(self.data_len) / u64::from(CHANNELS)
    }

    /// The length of a file with this header and its data.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN + u64::from(self.data_len)
    }
}

/// Parses the header this module writes (not WAV in general).
pub fn parse_header(h: &[u8]) -> Option<Header> {
    if h.len() < HEADER_LEN as usize || &h[0..4] != b"RIFF" || &h[8..16] != b"WAVEfmt " {
        return None;
    }
    let u16_at = |i: usize| Some(u16::from_le_bytes(h.get(i..i + 2)?.try_into().ok()?));
    let u32_at = |i: usize| Some(u32::from_le_bytes(h.get(i..i + 4)?.try_into().ok()?));
    let law = match u16_at(20)? {
        7 => Law::Ulaw,
        6 => Law::Alaw,
        _ => return None,
    };
    if u16_at(22)? != CHANNELS || u32_at(24)? != SAMPLE_RATE || &h[50..54] != b"data" {
        return None;
    }
    Some(Header {
        law,
        data_len: u32_at(54)?,
    })
}

/// Makes a file left by a crash consistent: drops a trailing half frame and writes the
/// sizes its length implies. Returns the header as repaired.
pub fn repair(path: &Path) -> io::Result<Header> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut h = [0u8; HEADER_LEN as usize];
    f.read_exact(&mut h)?;
    let law = parse_header(&h)
        .map(|h| h.law)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a sallyport recording"))?;
    let len = f.seek(SeekFrom::End(0))?;
    let data_len = data_len_of(len);
    f.set_len(HEADER_LEN + u64::from(data_len))?;
    write_sizes(&f, law, data_len)?;
    f.sync_all()?;
    Ok(Header { law, data_len })
}

/// A whole recording read back: the law and each channel's samples, still G.711.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub law: Law,
    pub left: Vec<u8>,
    pub right: Vec<u8>,
}

/// Reads a recording written by this module (tests, tools).
pub fn read(path: &Path) -> io::Result<Decoded> {
    let bytes = std::fs::read(path)?;
    let h = parse_header(&bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a sallyport recording"))?;
    let data = bytes.get(HEADER_LEN as usize..).unwrap_or(&[]);
    let data = data.get(..h.data_len as usize).unwrap_or(data);
    let left = data.iter().step_by(2).copied().collect();
    let right = data.iter().skip(1).step_by(2).copied().collect();
    Ok(Decoded {
        law: h.law,
        left,
        right,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_sizes_follow_the_data() {
        let h = header(Law::Ulaw, 16_000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 50 + 16_000);
        assert_eq!(
            u32::from_le_bytes(h[46..50].try_into().unwrap()),
            8_000,
            "fact: frames"
        );
        assert_eq!(
            parse_header(&h),
            Some(Header {
                law: Law::Ulaw,
                data_len: 16_000
            })
        );
        assert_eq!(
            parse_header(&header(Law::Alaw, 2)).map(|h| h.law),
            Some(Law::Alaw)
        );
        assert_eq!(parse_header(b"RIFF"), None);
    }

    #[test]
    fn repair_trims_a_half_frame_and_fixes_the_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.wav");
        let mut f = File::create(&path).unwrap();
        f.write_all(&header(Law::Alaw, 0)).unwrap();
        f.write_all(&[1, 2, 3, 4, 5]).unwrap();
        drop(f);
        let h = repair(&path).unwrap();
        assert_eq!(h.data_len, 4);
        let d = read(&path).unwrap();
        assert_eq!((d.left, d.right), (vec![1, 3], vec![2, 4]));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER_LEN + 4);
    }
}
