//! ITU-T G.711 μ-law (PCMU) and A-law (PCMA) companding of 16-bit linear PCM.
//!
//! The gateway never transcodes relayed audio; it encodes prompts once at load time
//! ([`super::prompts`]) and may decode for recording or monitoring. Encoding follows the
//! segment/mantissa definition of G.711 (μ-law with the 0x84 bias and 32635 clip, A-law
//! with even-bit inversion 0x55); decoding uses 256-entry tables built at compile time.

/// Encoded μ-law silence (linear 0).
pub const ULAW_SILENCE: u8 = 0xff;
/// Encoded A-law silence (linear +8, the code nearest zero).
pub const ALAW_SILENCE: u8 = 0xd5;

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Index of the highest set bit of a non-zero value (`floor(log2(v))`).
const fn top_bit(v: u32) -> u32 {
    31 - v.leading_zeros()
}

/// Encodes one linear sample to μ-law.
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    let mut v = sample as i32;
    let sign = if v < 0 { 0x80 } else { 0 };
    if v < 0 {
        v = -v;
    }
    if v > ULAW_CLIP {
        v = ULAW_CLIP;
    }
    v += ULAW_BIAS;
    // v is in 132..=32767, so the top bit is 7..=14 and the segment 0..=7.
    let exponent = top_bit(v as u32) - 7;
    let mantissa = (v >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as i32 | mantissa) as u8
}

/// Decodes one μ-law code to linear.
pub const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one linear sample to A-law.
pub const fn linear_to_alaw(sample: i16) -> u8 {
    let (mask, magnitude) = if sample >= 0 {
        (0xd5u8, sample as i32)
    } else {
        // One's complement keeps -32768 in range and matches G.711's negative decision levels.
        (0x55u8, -(sample as i32) - 1)
    };
    let code = if magnitude < 256 {
        (magnitude >> 4) as u8
    } else {
        let exponent = top_bit(magnitude as u32) - 7; // 1..=7
        let mantissa = (magnitude >> (exponent + 3)) & 0x0f;
        ((exponent << 4) as i32 | mantissa) as u8
    };
    code ^ mask
}

/// Decodes one A-law code to linear.
pub const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    t
}

/// μ-law code → linear sample.
pub static ULAW_TO_LINEAR: [i16; 256] = table(false);
/// A-law code → linear sample.
pub static ALAW_TO_LINEAR: [i16; 256] = table(true);

const fn cross_table(alaw_in: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw_in {
            linear_to_ulaw(alaw_to_linear(i as u8))
        } else {
            linear_to_alaw(ulaw_to_linear(i as u8))
        };
        i += 1;
    }
    t
}

/// μ-law code → the A-law code of the same decoded value (G.711 §3 style conversion).
pub static ULAW_TO_ALAW: [u8; 256] = cross_table(false);
/// A-law code → the μ-law code of the same decoded value.
pub static ALAW_TO_ULAW: [u8; 256] = cross_table(true);

/// Converts a G.711 payload between laws in place (a byte-per-byte table lookup: the only
/// "transcoding" the relay ever does, when the two legs settled on different laws).
pub fn convert_in_place(payload: &mut [u8], from: Law, to: Law) {
    let table = match (from, to) {
        (Law::Ulaw, Law::Alaw) => &ULAW_TO_ALAW,
        (Law::Alaw, Law::Ulaw) => &ALAW_TO_ULAW,
        _ => return,
    };
    for b in payload {
        *b = table[usize::from(*b)];
    }
}

/// The two G.711 laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// μ-law, RTP payload type 0 (PCMU).
    Ulaw,
    /// A-law, RTP payload type 8 (PCMA).
    Alaw,
}

impl Law {
    /// The law of a static RTP payload type: 0 PCMU, 8 PCMA.
    pub fn of_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Ulaw),
            8 => Some(Law::Alaw),
            _ => None,
        }
    }

    /// Encodes one sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Ulaw => linear_to_ulaw(sample),
            Law::Alaw => linear_to_alaw(sample),
        }
    }

    /// Decodes one code.
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::Ulaw => ULAW_TO_LINEAR[usize::from(code)],
            Law::Alaw => ALAW_TO_LINEAR[usize::from(code)],
        }
    }

    /// The code for silence.
    pub fn silence(self) -> u8 {
        match self {
            Law::Ulaw => ULAW_SILENCE,
            Law::Alaw => ALAW_SILENCE,
        }
    }

    /// Encodes `pcm` into `out`, sample by sample, up to the shorter of the two.
    pub fn encode_into(self, pcm: &[i16], out: &mut [u8]) -> usize {
        for (o, s) in out.iter_mut().zip(pcm) {
            *o = self.encode(*s);
        }
        pcm.len().min(out.len())
    }

    /// Decodes `codes` into `out`, up to the shorter of the two.
    pub fn decode_into(self, codes: &[u8], out: &mut [i16]) -> usize {
        for (o, c) in out.iter_mut().zip(codes) {
            *o = self.decode(*c);
        }
        codes.len().min(out.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(32767), 0x80);
        assert_eq!(linear_to_ulaw(-32768), 0x00);
        assert_eq!(linear_to_ulaw(-32124), 0x00);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        assert_eq!(linear_to_alaw(8), 0xd5);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(32767), 0xaa);
        assert_eq!(linear_to_alaw(-32768), 0x2a);
    }

    #[test]
    fn codes_round_trip_through_linear() {
        for code in 0..=255u8 {
            let u = ulaw_to_linear(code);
            // 0x7f and 0xff both decode to 0; zero encodes as 0xff.
            let back = linear_to_ulaw(u);
            assert!(back == code || u == 0, "ulaw {code:#x}");
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code, "alaw {code:#x}");
        }
    }

    #[test]
    fn decode_of_encode_is_monotonic_and_close() {
        for law in [Law::Ulaw, Law::Alaw] {
            let mut prev = i16::MIN;
            for s in i16::MIN..=i16::MAX {
                let d = law.decode(law.encode(s));
                assert!(d >= prev, "{law:?} not monotonic at {s}");
                prev = d;
                // Quantization error is bounded by half the largest step (1024 / 2 μ, 1024 A).
                assert!(
                    (i32::from(d) - i32::from(s)).abs() <= 1100,
                    "{law:?} at {s}: {d}"
                );
            }
        }
    }

    #[test]
    fn cross_law_conversion() {
        let mut p = [0xffu8, 0x80, 0x00];
        convert_in_place(&mut p, Law::Ulaw, Law::Alaw);
        assert_eq!(p[0], 0xd5);
        assert_eq!(alaw_to_linear(p[1]), 32256);
        convert_in_place(&mut p, Law::Alaw, Law::Ulaw);
        assert_eq!(ulaw_to_linear(p[2]), -32124);
        let before = p;
        convert_in_place(&mut p, Law::Ulaw, Law::Ulaw);
        assert_eq!(p, before);
    }

    #[test]
    fn slices() {
        let pcm = [0i16, 1000, -1000, 32767];
        let mut enc = [0u8; 4];
        let mut dec = [0i16; 4];
        assert_eq!(Law::Alaw.encode_into(&pcm, &mut enc), 4);
        assert_eq!(Law::Alaw.decode_into(&enc, &mut dec), 4);
        assert_eq!(dec[0], 8);
        assert_eq!(Law::Ulaw.silence(), 0xff);
    }
}
