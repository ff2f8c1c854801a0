//! Message photos: what is accepted, how it is cleaned, where it is kept.
//!
//! A photo is accepted when its first bytes say PNG or JPEG ([`sniff`]; the type the
//! sender claims is not trusted) and it is within the size limit. It is then decoded
//! and encoded again in the same format ([`reencode`]): the new file holds the pixels and
//! nothing else, so EXIF (the phone's location, its serial number), comments, colour
//! profiles and anything appended after the image are gone, and a file that is not
//! really an image fails to decode and is refused. Decoding is bounded by
//! `messaging.max_photo_pixels` on each side and by the memory of that many pixels.
//!
//! The new file is kept as `<data_dir>/messages/<sha256>` ([`store`]): the same content
//! is one file. It is served only through the authorised photo routes, with its
//! `Content-Type`, `X-Content-Type-Options: nosniff`, `Content-Disposition: inline` and a
//! `Content-Security-Policy: sandbox`, so a browser never runs it as a page or a script.

use sha2::{Digest, Sha256};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// The formats a photo may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoKind {
    Png,
    Jpeg,
}

impl PhotoKind {
    pub fn content_type(self) -> &'static str {
        match self {
            PhotoKind::Png => "image/png",
            PhotoKind::Jpeg => "image/jpeg",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            PhotoKind::Png => "png",
            PhotoKind::Jpeg => "jpg",
        }
    }

    pub fn from_content_type(s: &str) -> Option<PhotoKind> {
        match s {
            "image/png" => Some(PhotoKind::Png),
            "image/jpeg" => Some(PhotoKind::Jpeg),
            _ => None,
        }
    }

    fn format(self) -> image::ImageFormat {
        match self {
            PhotoKind::Png => image::ImageFormat::Png,
            PhotoKind::Jpeg => image::ImageFormat::Jpeg,
        }
    }
}

/// The format `bytes` start like, if PNG or JPEG.
pub fn sniff(bytes: &[u8]) -> Option<PhotoKind> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.starts_with(PNG) {
        Some(PhotoKind::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(PhotoKind::Jpeg)
    } else {
        None
    }
}

/// Why a photo is refused. Each has its own code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoError {
    #[error("the photo is empty")]
    Empty,
    #[error("the photo is {bytes} bytes; the limit is {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("only PNG and JPEG photos are accepted (the file's first bytes are neither)")]
    NotAPhoto,
    #[error("the photo is {width}x{height} pixels; the limit is {limit} on each side")]
    TooManyPixels { width: u32, height: u32, limit: u32 },
    #[error("the photo could not be read as {0}: it is damaged or not a photo")]
    Undecodable(&'static str),
}

impl PhotoError {
    pub fn code(&self) -> &'static str {
        match self {
            PhotoError::Empty => "photo_empty",
            PhotoError::TooLarge { .. } => "photo_too_large",
            PhotoError::NotAPhoto => "photo_type",
            PhotoError::TooManyPixels { .. } => "photo_too_large",
            PhotoError::Undecodable(_) => "photo_unreadable",
        }
    }
}

/// A photo as it is kept: re-encoded, with its size and SHA-256 (hex).
#[derive(Debug, Clone)]
pub struct CleanPhoto {
    pub kind: PhotoKind,
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub sha256: String,
}

/// Checks `bytes` (type by its first bytes, `limit` bytes, `max_side` pixels on each
/// side) and re-encodes it in its own format with nothing but its pixels. CPU work: run it
/// off the async threads.
pub fn reencode(bytes: &[u8], limit: u64, max_side: u32) -> Result<CleanPhoto, PhotoError> {
    if bytes.is_empty() {
        return Err(PhotoError::Empty);
    }
    let size = bytes.len() as u64;
    if size > limit {
        return Err(PhotoError::TooLarge { bytes: size, limit });
    }
    let kind = sniff(bytes).ok_or(PhotoError::NotAPhoto)?;
    let name = kind.content_type();
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), kind.format());
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    limits.max_alloc = Some(u64::from(max_side) * u64::from(max_side) * 4 + (64 << 20));
    reader.limits(limits);
    let (width, height) = reader
        .into_dimensions()
        .map_err(|_| PhotoError::Undecodable(name))?;
    if width > max_side || height > max_side {
        return Err(PhotoError::TooManyPixels {
            width,
            height,
            limit: max_side,
        });
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), kind.format());
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|_| PhotoError::Undecodable(name))?;
    let mut out = Cursor::new(Vec::new());
    let written = match kind {
        PhotoKind::Png => decoded.write_to(&mut out, image::ImageFormat::Png),
        PhotoKind::Jpeg => {
            let rgb = image::DynamicImage::ImageRgb8(decoded.to_rgb8());
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 88);
            rgb.write_with_encoder(encoder)
        }
    };
    written.map_err(|_| PhotoError::Undecodable(name))?;
    let data = out.into_inner();
    let sha256 = hex::encode(Sha256::digest(&data));
    Ok(CleanPhoto {
        kind,
        data,
        width: decoded.width(),
        height: decoded.height(),
        sha256,
    })
}

/// The directory photos are kept in.
pub fn dir(config: &crate::config::Config) -> PathBuf {
    config.node.data_dir.join("messages")
}

/// Where the photo with content `sha256` is kept (the name is checked to be hex, so a
/// stored value never leads out of the directory).
pub fn path(dir: &Path, sha256: &str) -> Option<PathBuf> {
    let hex = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| dir.join(sha256))
}

/// Keeps `photo` under `dir` (written to a temporary file and renamed, so a reader never
/// sees half a file); nothing is written when the same content is already there.
pub fn store(dir: &Path, photo: &CleanPhoto) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let target = path(dir, &photo.sha256)
        .ok_or_else(|| std::io::Error::other("a photo's name is its SHA-256"))?;
    if target.exists() {
        return Ok(target);
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &photo.data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, 90])
        });
        let mut out = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn a_png_with_a_text_chunk_comes_back_without_it() {
        let mut bytes = png(8, 6);
        // A tEXt chunk before IEND (its CRC is not checked by the decoder's default).
        let iend = bytes.len() - 12;
        let mut chunk = Vec::new();
        let data = b"Comment\0GPS 41.88,-87.63";
        chunk.extend((data.len() as u32).to_be_bytes());
        chunk.extend(b"tEXt");
        chunk.extend(data);
        let crc = crc(&chunk[4..]);
        chunk.extend(crc.to_be_bytes());
        bytes.splice(iend..iend, chunk);
        assert!(bytes.windows(3).any(|w| w == b"GPS"));
        let clean = reencode(&bytes, 1 << 20, 100).unwrap();
        assert_eq!(
            (clean.kind, clean.width, clean.height),
            (PhotoKind::Png, 8, 6)
        );
        assert!(!clean.data.windows(3).any(|w| w == b"GPS"));
        assert_eq!(sniff(&clean.data), Some(PhotoKind::Png));
    }

    fn crc(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        assert_eq!(reencode(b"", 10, 100).unwrap_err(), PhotoError::Empty);
        assert_eq!(
            reencode(b"<html><script>alert(1)</script>", 1 << 20, 100).unwrap_err(),
            PhotoError::NotAPhoto
        );
        let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
        fake.extend(b"<script>alert(1)</script>");
        assert!(matches!(
            reencode(&fake, 1 << 20, 100).unwrap_err(),
            PhotoError::Undecodable(_)
        ));
        let big = png(50, 50);
        assert!(matches!(
            reencode(&big, 10, 100).unwrap_err(),
            PhotoError::TooLarge { .. }
        ));
        assert!(matches!(
            reencode(&big, 1 << 20, 20).unwrap_err(),
            PhotoError::TooManyPixels { .. } | PhotoError::Undecodable(_)
        ));
    }

    #[test]
    fn a_jpeg_is_re_encoded_as_a_jpeg() {
        let img = image::RgbImage::from_fn(16, 16, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
        let mut out = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        let clean = reencode(&out.into_inner(), 1 << 20, 100).unwrap();
        assert_eq!(clean.kind, PhotoKind::Jpeg);
        assert_eq!(sniff(&clean.data), Some(PhotoKind::Jpeg));
        let dir = tempfile::tempdir().unwrap();
        let p = store(dir.path(), &clean).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), clean.data);
        assert_eq!(store(dir.path(), &clean).unwrap(), p);
        assert!(path(dir.path(), "../etc/passwd").is_none());
    }
}
