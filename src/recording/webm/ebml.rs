//! EBML (RFC 8794), the little of it a WebM writer needs: element IDs, variable-size
//! integers, elements with a minimal or a fixed-width size, and reading an element's head
//! back (for [`super::repair`] and the tests).
//!
//! An element is its ID (1–4 bytes, marker bits included, so IDs are written as the bytes
//! of their constant), its data size (a variable-size integer: 1–8 bytes, the count of
//! leading zero bits of the first byte saying how many follow) and its data. A size whose
//! value bits are all ones means "unknown": the element goes on until something that cannot
//! be its child. Sizes this writer must patch later are written 8 bytes wide, so the final
//! value fits where the placeholder was.

/// Element IDs used by the writer (the Matroska names).
pub(crate) mod id {
    pub(crate) const EBML: u32 = 0x1A45_DFA3;
    pub(crate) const EBML_VERSION: u32 = 0x4286;
    pub(crate) const EBML_READ_VERSION: u32 = 0x42F7;
    pub(crate) const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub(crate) const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub(crate) const DOC_TYPE: u32 = 0x4282;
    pub(crate) const DOC_TYPE_VERSION: u32 = 0x4287;
    pub(crate) const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub(crate) const VOID: u32 = 0xEC;

    pub(crate) const SEGMENT: u32 = 0x1853_8067;
    pub(crate) const SEEK_HEAD: u32 = 0x114D_9B74;
    pub(crate) const SEEK: u32 = 0x4DBB;
    pub(crate) const SEEK_ID: u32 = 0x53AB;
    pub(crate) const SEEK_POSITION: u32 = 0x53AC;

    pub(crate) const INFO: u32 = 0x1549_A966;
    pub(crate) const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub(crate) const MUXING_APP: u32 = 0x4D80;
    pub(crate) const WRITING_APP: u32 = 0x5741;
    pub(crate) const DATE_UTC: u32 = 0x4461;
    pub(crate) const DURATION: u32 = 0x4489;

    pub(crate) const TRACKS: u32 = 0x1654_AE6B;
    pub(crate) const TRACK_ENTRY: u32 = 0xAE;
    pub(crate) const TRACK_NUMBER: u32 = 0xD7;
    pub(crate) const TRACK_UID: u32 = 0x73C5;
    pub(crate) const TRACK_TYPE: u32 = 0x83;
    pub(crate) const FLAG_LACING: u32 = 0x9C;
    pub(crate) const CODEC_ID: u32 = 0x86;
    pub(crate) const CODEC_PRIVATE: u32 = 0x63A2;
    pub(crate) const CODEC_DELAY: u32 = 0x56AA;
    pub(crate) const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub(crate) const VIDEO: u32 = 0xE0;
    pub(crate) const PIXEL_WIDTH: u32 = 0xB0;
    pub(crate) const PIXEL_HEIGHT: u32 = 0xBA;
    pub(crate) const AUDIO: u32 = 0xE1;
    pub(crate) const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub(crate) const CHANNELS: u32 = 0x9F;

    pub(crate) const CLUSTER: u32 = 0x1F43_B675;
    pub(crate) const TIMESTAMP: u32 = 0xE7;
    pub(crate) const SIMPLE_BLOCK: u32 = 0xA3;

    pub(crate) const CUES: u32 = 0x1C53_BB6B;
    pub(crate) const CUE_POINT: u32 = 0xBB;
    pub(crate) const CUE_TIME: u32 = 0xB3;
    pub(crate) const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub(crate) const CUE_TRACK: u32 = 0xF7;
    pub(crate) const CUE_CLUSTER_POSITION: u32 = 0xF1;
}

/// The 8-byte "unknown" size: a Segment or Cluster still being written.
pub(crate) const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// The largest size an 8-byte variable-size integer holds (all ones is "unknown").
pub(crate) const MAX_SIZE: u64 = (1 << 56) - 2;

/// How many bytes an ID takes (its constant already carries the marker bits).
pub(crate) fn id_len(id: u32) -> usize {
    match id {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        0x1_0000..=0xFF_FFFF => 3,
        _ => 4,
    }
}

pub(crate) fn write_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    out.extend_from_slice(bytes.get(4 - id_len(id)..).unwrap_or(&bytes));
}

/// The fewest bytes a data size takes: `n` bytes carry 7·n value bits, all ones excluded.
pub(crate) fn size_len(size: u64) -> usize {
    (1..8).find(|&n| size < (1u64 << (7 * n)) - 1).unwrap_or(8)
}

/// Writes `size` as a variable-size integer of exactly `len` bytes (1–8). A size that does
/// not fit is written as the largest that does; callers pass sizes they checked.
pub(crate) fn write_size_fixed(out: &mut Vec<u8>, size: u64, len: usize) {
    let len = len.clamp(1, 8);
    let max = (1u64 << (7 * len)) - 2;
    let v = size.min(max) | (1u64 << (7 * len));
    let bytes = v.to_be_bytes();
    out.extend_from_slice(bytes.get(8 - len..).unwrap_or(&bytes));
}

pub(crate) fn write_size(out: &mut Vec<u8>, size: u64) {
    write_size_fixed(out, size, size_len(size));
}

/// The 8 bytes of `size` as a fixed-width variable-size integer (for patching).
pub(crate) fn size8(size: u64) -> [u8; 8] {
    let v = size.min(MAX_SIZE) | (1u64 << 56);
    v.to_be_bytes()
}

/// An element with its data.
pub(crate) fn bytes(out: &mut Vec<u8>, id: u32, data: &[u8]) {
    write_id(out, id);
    write_size(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// An unsigned integer element in the fewest bytes (at least one).
pub(crate) fn uint(out: &mut Vec<u8>, id: u32, v: u64) {
    let len = (1..8).find(|&n| v < 1u64 << (8 * n)).unwrap_or(8);
    uint_fixed(out, id, v, len);
}

/// An unsigned integer element `len` bytes wide (leading zeros allowed), to be patched.
pub(crate) fn uint_fixed(out: &mut Vec<u8>, id: u32, v: u64, len: usize) {
    let len = len.clamp(1, 8);
    let bytes_be = v.to_be_bytes();
    bytes(out, id, bytes_be.get(8 - len..).unwrap_or(&bytes_be));
}

pub(crate) fn float64(out: &mut Vec<u8>, id: u32, v: f64) {
    bytes(out, id, &v.to_be_bytes());
}

/// A master element whose children `body` writes.
pub(crate) fn master(out: &mut Vec<u8>, id: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    bytes(out, id, &inner);
}

/// A Void element exactly `total` bytes long (at least 2), reserving room to patch.
pub(crate) fn void(out: &mut Vec<u8>, total: usize) {
    let total = total.max(2);
    write_id(out, id::VOID);
    if total <= 128 {
        write_size_fixed(out, total as u64 - 2, 1);
        out.resize(out.len() + total - 2, 0);
    } else {
        let data = total.saturating_sub(9);
        write_size_fixed(out, data as u64, 8);
        out.resize(out.len() + data, 0);
    }
}

/// An element's head as read: where it starts, where its data starts, how long the data
/// is (`None`: unknown size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) id: u32,
    /// Bytes of ID and size.
    pub(crate) head_len: usize,
    pub(crate) size: Option<u64>,
    /// Bytes the size field took (8 for the sizes this writer patches).
    pub(crate) size_len: usize,
}

impl Head {
    /// The element's whole length, when its size is known.
    pub(crate) fn total(&self) -> Option<u64> {
        self.size.map(|s| s.saturating_add(self.head_len as u64))
    }
}

/// Reads an ID at the start of `b`: `None` when `b` is too short or the first byte is not
/// a valid ID start.
pub(crate) fn read_id(b: &[u8]) -> Option<(u32, usize)> {
    let first = *b.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return None;
    }
    let bytes = b.get(..len)?;
    Some((
        bytes.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x)),
        len,
    ))
}

/// Reads a data size at the start of `b`: (value, bytes, unknown).
pub(crate) fn read_size(b: &[u8]) -> Option<(u64, usize, bool)> {
    let first = *b.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let bytes = b.get(..len)?;
    let mask = if len == 8 { 0 } else { 0xFFu8 >> len };
    let v = bytes
        .iter()
        .skip(1)
        .fold(u64::from(first & mask), |a, &x| (a << 8) | u64::from(x));
    let unknown = v == (1u64 << (7 * len)) - 1;
    Some((v, len, unknown))
}

/// Reads an element's head at the start of `b`.
pub(crate) fn read_head(b: &[u8]) -> Option<Head> {
    let (id, id_len) = read_id(b)?;
    let (size, size_len, unknown) = read_size(b.get(id_len..)?)?;
    Some(Head {
        id,
        head_len: id_len + size_len,
        size: (!unknown).then_some(size),
        size_len,
    })
}

/// An unsigned integer element's value from its data (at most 8 bytes).
pub(crate) fn read_uint(data: &[u8]) -> Option<u64> {
    (data.len() <= 8).then(|| data.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_the_fewest_bytes_and_never_all_ones() {
        let cases: [(u64, &[u8]); 8] = [
            (0, &[0x80]),
            (1, &[0x81]),
            (126, &[0xFE]),
            // 127 in one byte would be all ones ("unknown"): two bytes.
            (127, &[0x40, 0x7F]),
            (0x3FFE, &[0x7F, 0xFE]),
            (0x3FFF, &[0x20, 0x3F, 0xFF]),
            (0x1F_FFFE, &[0x3F, 0xFF, 0xFE]),
            (MAX_SIZE, &[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]),
        ];
        for (size, want) in cases {
            let mut out = Vec::new();
            write_size(&mut out, size);
            assert_eq!(out, want, "size {size}");
            assert_eq!(size_len(size), want.len());
            assert_eq!(read_size(&out), Some((size, want.len(), false)));
        }
    }

    #[test]
    fn fixed_width_sizes_patch_in_place_and_unknown_reads_as_unknown() {
        let mut out = Vec::new();
        write_size_fixed(&mut out, 5, 8);
        assert_eq!(out, [0x01, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(size8(5), [0x01, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(read_size(&out), Some((5, 8, false)));
        assert_eq!(read_size(&UNKNOWN_SIZE).map(|s| s.2), Some(true));
        assert_eq!(read_size(&[0xFF]), Some((0x7F, 1, true)));
        // A size too large for its width is capped, never wrapped into "unknown".
        let mut out = Vec::new();
        write_size_fixed(&mut out, 1000, 1);
        assert_eq!(out, [0xFE]);
        assert_eq!(read_size(&[0x00]), None, "no marker bit in the first byte");
        assert_eq!(read_size(&[0x40]), None, "too short");
    }

    #[test]
    fn ids_are_written_as_their_bytes_and_read_back() {
        for (id, len) in [
            (id::VOID, 1),
            (id::SIMPLE_BLOCK, 1),
            (id::DURATION, 2),
            (id::TIMESTAMP_SCALE, 3),
            (id::SEGMENT, 4),
            (id::CLUSTER, 4),
        ] {
            let mut out = Vec::new();
            write_id(&mut out, id);
            assert_eq!(out.len(), len, "{id:#x}");
            assert_eq!(out, id.to_be_bytes()[4 - len..]);
            assert_eq!(read_id(&out), Some((id, len)));
        }
        assert_eq!(read_id(&[0x08, 0, 0, 0, 0]), None, "IDs stop at 4 bytes");
        assert_eq!(read_id(&[0x1A, 0x45]), None, "too short");
    }

    #[test]
    fn elements_and_voids_have_the_lengths_reserved() {
        let mut out = Vec::new();
        uint(&mut out, id::TRACK_NUMBER, 1);
        assert_eq!(out, [0xD7, 0x81, 0x01]);
        let mut out = Vec::new();
        uint(&mut out, id::TIMESTAMP, 0);
        assert_eq!(out, [0xE7, 0x81, 0x00], "zero still takes one byte");
        let mut out = Vec::new();
        uint(&mut out, id::TIMESTAMP, 0x1_0000);
        assert_eq!(out, [0xE7, 0x83, 0x01, 0x00, 0x00]);
        let mut out = Vec::new();
        uint_fixed(&mut out, id::PIXEL_WIDTH, 320, 2);
        assert_eq!(out, [0xB0, 0x82, 0x01, 0x40]);
        let mut out = Vec::new();
        float64(&mut out, id::DURATION, 1.5);
        assert_eq!(out.len(), 11);
        assert_eq!(&out[..3], [0x44, 0x89, 0x88]);
        for total in [2, 11, 96, 128, 129, 300] {
            let mut out = Vec::new();
            void(&mut out, total);
            assert_eq!(out.len(), total, "void of {total}");
            let h = read_head(&out).unwrap();
            assert_eq!((h.id, h.total()), (id::VOID, Some(total as u64)));
        }
        let mut out = Vec::new();
        master(&mut out, id::VIDEO, |b| uint(b, id::PIXEL_WIDTH, 2));
        assert_eq!(out, [0xE0, 0x83, 0xB0, 0x81, 0x02]);
        let h = read_head(&out).unwrap();
        assert_eq!((h.id, h.head_len, h.size), (id::VIDEO, 2, Some(3)));
        assert_eq!(read_uint(&[0x01, 0x40]), Some(320));
        assert_eq!(read_uint(&[0; 9]), None);
    }
}
