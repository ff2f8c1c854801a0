//! What the gateway reads of an Opus packet without decoding it: its duration, from the
//! TOC byte (RFC 6716 §3.1). Used where packets are counted in time: the visit recorder's
//! WebM blocks and the synthetic participant's Ogg reader.

/// An Opus packet's duration in 48 kHz samples, from its TOC byte and (code 3) its frame
/// count byte; `None` for an empty packet or a code-3 packet without its count.
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Samples per frame at 48 kHz: SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
    let per_frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    Some(per_frame * frames)
}
