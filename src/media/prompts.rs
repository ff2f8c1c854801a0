//! Voice prompts: loading `config/prompts/*.wav`, encoding them once, and paced playback.
//!
//! The shipped prompts are generated once by `config/prompts/generate.sh` (espeak-ng, then
//! sox to 8000 Hz mono 16-bit PCM) and committed. [`parse_wav`] trusts nothing in a file:
//! it walks RIFF chunks with bounds checks and accepts only PCM (or `WAVE_FORMAT_EXTENSIBLE`
//! carrying PCM), 16-bit, mono, 8000 Hz, at most [`MAX_PROMPT_SECS`] long. Each
//! [`Prompt`] is encoded to PCMU and PCMA at load time into shared, immutable
//! `Arc<[u8]>` buffers, so playing a prompt to a call costs one `Arc` clone and no
//! encoding on the media path.
//!
//! [`PromptPlayer`] is sans-IO: it yields one frame per `ptime` (20 ms = 160 samples by
//! default) in the leg's codec, padding the last frame with encoded silence, and paces
//! itself from the `now` the driver passes ([`PromptPlayer::poll_timeout`]); frame `n` is
//! due at `start + n × ptime` so timing does not drift. The driver hands each frame to
//! [`super::relay::Relay::stamp_local`], which advances the RTP timestamp by
//! [`Frame::samples`].
//!
//! The acceptance announcements do not speak the inmate's name or the facility: those
//! would need per-inmate audio (commonly the inmate records their name at the first call)
//! or run-time speech synthesis, neither of which belongs in committed files. The text is
//! generic ("a call from an inmate at a correctional facility"); a per-facility name clip
//! can be played before it by queueing two players.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

use super::g711::Law;
use super::sdp::CodecName;

/// Sample rate of prompts (and of G.711).
pub const SAMPLE_RATE: u32 = 8000;
/// Longest prompt accepted.
pub const MAX_PROMPT_SECS: usize = 60;

/// Why a WAV file is not a usable prompt.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WavError {
    /// Not a `RIFF`…`WAVE` file.
    #[error("not a RIFF/WAVE file")]
    NotWave,
    /// A chunk header or body runs past the end of the file.
    #[error("truncated chunk at byte {0}")]
    Truncated(usize),
    /// No `fmt ` chunk before `data`.
    #[error("missing fmt chunk")]
    MissingFormat,
    /// No `data` chunk.
    #[error("missing data chunk")]
    MissingData,
    /// A format other than PCM 16-bit mono 8000 Hz.
    #[error("unsupported format: tag {tag:#x}, {channels} channel(s), {rate} Hz, {bits} bits (need PCM, 1, 8000, 16)")]
    Unsupported {
        /// Format tag (1 = PCM, 0xFFFE = extensible).
        tag: u16,
        /// Channel count.
        channels: u16,
        /// Sample rate.
        rate: u32,
        /// Bits per sample.
        bits: u16,
    },
    /// Data of odd length, empty, or longer than [`MAX_PROMPT_SECS`].
    #[error("bad audio length: {0} bytes")]
    BadLength(usize),
}

/// Why the prompt set could not be loaded.
#[derive(Debug, Error)]
pub enum PromptError {
    /// A prompt file could not be read.
    #[error("cannot read prompt {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A prompt file is not a valid prompt WAV.
    #[error("bad prompt {path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: WavError,
    },
}

/// Little-endian reads with bounds checks.
fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(*b.get(at..)?.first_chunk::<2>()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(*b.get(at..)?.first_chunk::<4>()?))
}

/// The audio format fields of a `fmt ` chunk.
#[derive(Debug, Clone, Copy)]
struct Format {
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
}

impl Format {
    fn parse(body: &[u8], at: usize) -> Result<Self, WavError> {
        let f = (|| {
            let tag = le16(body, 0)?;
            // WAVE_FORMAT_EXTENSIBLE: the real tag is the first 2 bytes of the subformat GUID.
            let tag = if tag == 0xfffe { le16(body, 24)? } else { tag };
            Some(Format {
                tag,
                channels: le16(body, 2)?,
                rate: le32(body, 4)?,
                bits: le16(body, 14)?,
            })
        })();
        f.ok_or(WavError::Truncated(at))
    }

    fn check(self) -> Result<(), WavError> {
        if (self.tag, self.channels, self.rate, self.bits) == (1, 1, SAMPLE_RATE, 16) {
            Ok(())
        } else {
            Err(WavError::Unsupported {
                tag: self.tag,
                channels: self.channels,
                rate: self.rate,
                bits: self.bits,
            })
        }
    }
}

/// Parses a WAV file into 16-bit samples (PCM, mono, 8000 Hz only).
pub fn parse_wav(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::NotWave);
    }
    let mut format = None;
    let mut at = 12;
    while at < bytes.len() {
        let id = bytes.get(at..at + 4).ok_or(WavError::Truncated(at))?;
        let size = le32(bytes, at + 4).ok_or(WavError::Truncated(at))?;
        let size = usize::try_from(size).map_err(|_| WavError::Truncated(at))?;
        let body = bytes
            .get(at + 8..)
            .and_then(|rest| rest.get(..size))
            .ok_or(WavError::Truncated(at))?;
        match id {
            b"fmt " => format = Some(Format::parse(body, at)?),
            b"data" => {
                format.ok_or(WavError::MissingFormat)?.check()?;
                return samples(body);
            }
            _ => {}
        }
        at = at + 8 + size + size % 2;
    }
    Err(WavError::MissingData)
}

fn samples(data: &[u8]) -> Result<Vec<i16>, WavError> {
    let max = MAX_PROMPT_SECS * SAMPLE_RATE as usize * 2;
    if data.is_empty() || data.len() % 2 != 0 || data.len() > max {
        return Err(WavError::BadLength(data.len()));
    }
    Ok(data
        .chunks_exact(2)
        .filter_map(|s| s.first_chunk::<2>().map(|b| i16::from_le_bytes(*b)))
        .collect())
}

macro_rules! prompt_ids {
    ($($variant:ident => $file:literal,)*) => {
        /// Every prompt the call flow plays; each is `config/prompts/<file_name>`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum PromptId {
            $(#[doc = concat!("`", $file, "`")] $variant,)*
        }

        impl PromptId {
            /// All prompts, in declaration order.
            pub const ALL: &'static [PromptId] = &[$(PromptId::$variant,)*];

            /// File name under the prompts directory.
            pub fn file_name(self) -> &'static str {
                match self {
                    $(PromptId::$variant => $file,)*
                }
            }
        }
    };
}

prompt_ids! {
    EnterId => "enter_id.wav",
    EnterPin => "enter_pin.wav",
    PinInvalid => "pin_invalid.wav",
    PinLocked => "pin_locked.wav",
    AccountLocked => "account_locked.wav",
    NotApproved => "not_approved.wav",
    Blocked => "blocked.wav",
    OutsideHours => "outside_hours.wav",
    InsufficientFunds => "insufficient_funds.wav",
    CallLimit => "call_limit.wav",
    PleaseWait => "please_wait.wav",
    AnnouncementRecorded => "announcement_recorded.wav",
    AnnouncementPrivileged => "announcement_privileged.wav",
    Accepted => "accepted.wav",
    Declined => "declined.wav",
    FundsWarning => "funds_warning.wav",
    DurationWarning => "duration_warning.wav",
    FundsExhausted => "funds_exhausted.wav",
    Goodbye => "goodbye.wav",
    VerifyNumber => "verify_number.wav",
    NumberConfirmed => "number_confirmed.wav",
    CodeNotRight => "code_not_right.wav",
}

/// One prompt, encoded in both G.711 laws.
#[derive(Debug, Clone)]
pub struct Prompt {
    pcmu: Arc<[u8]>,
    pcma: Arc<[u8]>,
}

impl Prompt {
    /// Encodes 8 kHz samples.
    pub fn from_samples(samples: &[i16]) -> Self {
        let encode = |law: Law| samples.iter().map(|&s| law.encode(s)).collect();
        Prompt {
            pcmu: encode(Law::Ulaw),
            pcma: encode(Law::Alaw),
        }
    }

    /// Parses and encodes a WAV file's bytes.
    pub fn from_wav(bytes: &[u8]) -> Result<Self, WavError> {
        Ok(Self::from_samples(&parse_wav(bytes)?))
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.pcmu.len()
    }

    /// Play time.
    pub fn duration(&self) -> Duration {
        let samples = u64::try_from(self.samples()).unwrap_or(u64::MAX);
        Duration::from_micros(samples.saturating_mul(1_000_000) / u64::from(SAMPLE_RATE))
    }

    /// The encoded audio for `codec`.
    pub fn encoded(&self, codec: CodecName) -> &Arc<[u8]> {
        match codec {
            CodecName::Pcmu => &self.pcmu,
            CodecName::Pcma => &self.pcma,
        }
    }

    /// A player of this prompt in `codec` with `ptime_ms` frames.
    pub fn player(&self, codec: CodecName, ptime_ms: u32) -> PromptPlayer {
        PromptPlayer::new(self, codec, ptime_ms)
    }
}

/// All prompts, loaded once at start-up and shared by every call.
#[derive(Debug, Clone)]
pub struct PromptSet {
    /// Indexed like [`PromptId::ALL`].
    prompts: Vec<Prompt>,
}

impl PromptSet {
    /// Loads every [`PromptId`] from `dir` (e.g. `config/prompts`).
    pub fn load_dir(dir: &Path) -> Result<Self, PromptError> {
        let prompts = PromptId::ALL
            .iter()
            .map(|id| {
                let path = dir.join(id.file_name());
                let bytes = std::fs::read(&path).map_err(|source| PromptError::Io {
                    path: path.clone(),
                    source,
                })?;
                Prompt::from_wav(&bytes).map_err(|source| PromptError::Wav { path, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(PromptSet { prompts })
    }

    /// The prompt for `id`.
    pub fn get(&self, id: PromptId) -> Option<&Prompt> {
        let index = PromptId::ALL.iter().position(|p| *p == id)?;
        self.prompts.get(index)
    }
}

/// One frame produced by a [`PromptPlayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Bytes written to the output buffer (one per sample in G.711).
    pub len: usize,
    /// RTP timestamp units the frame covers (the increment for the next frame).
    pub samples: u32,
}

/// Sans-IO playback of one prompt as RTP-sized frames.
#[derive(Debug, Clone)]
pub struct PromptPlayer {
    audio: Arc<[u8]>,
    silence: u8,
    frame_samples: usize,
    frame: Duration,
    pos: usize,
    /// When playback started, once [`Self::start`] was called.
    started: Option<Instant>,
    frames_played: u32,
}

impl PromptPlayer {
    /// A player of `prompt` in `codec`, `ptime_ms` per frame (clamped to 10–120 ms).
    pub fn new(prompt: &Prompt, codec: CodecName, ptime_ms: u32) -> Self {
        let ptime = ptime_ms.clamp(10, 120);
        let law = match codec {
            CodecName::Pcmu => Law::Ulaw,
            CodecName::Pcma => Law::Alaw,
        };
        PromptPlayer {
            audio: Arc::clone(prompt.encoded(codec)),
            silence: law.silence(),
            frame_samples: (ptime * SAMPLE_RATE / 1000) as usize,
            frame: Duration::from_millis(u64::from(ptime)),
            pos: 0,
            started: None,
            frames_played: 0,
        }
    }

    /// Frames in the whole prompt (the last one padded with silence).
    pub fn frame_count(&self) -> usize {
        self.audio.len().div_ceil(self.frame_samples)
    }

    /// Bytes per frame.
    pub fn frame_len(&self) -> usize {
        self.frame_samples
    }

    /// Whether every frame has been produced.
    pub fn is_finished(&self) -> bool {
        self.pos >= self.audio.len()
    }

    /// Writes the next frame into `out` regardless of pacing. `None` when finished or when
    /// `out` is shorter than [`Self::frame_len`].
    pub fn next_frame(&mut self, out: &mut [u8]) -> Option<Frame> {
        let out = out.get_mut(..self.frame_samples)?;
        let rest = self.audio.get(self.pos..).filter(|r| !r.is_empty())?;
        let n = rest.len().min(out.len());
        let (audio, pad) = out.split_at_mut(n);
        audio.copy_from_slice(rest.get(..n)?);
        pad.fill(self.silence);
        self.pos += n;
        self.frames_played += 1;
        Some(Frame {
            len: out.len(),
            samples: u32::try_from(self.frame_samples).unwrap_or(u32::MAX),
        })
    }

    /// Starts paced playback at `now` (the first frame is due at once).
    pub fn start(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// When the next frame is due, or `None` if not started or finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        Some(self.started? + self.frame * self.frames_played)
    }

    /// Writes the next frame if it is due at `now`. A late driver calls this in a loop to
    /// catch up.
    pub fn poll_frame(&mut self, now: Instant, out: &mut [u8]) -> Option<Frame> {
        if now < self.poll_timeout()? {
            return None;
        }
        self.next_frame(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8], extra: &[u8]) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&tag.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * 2).to_le_bytes());
        fmt.extend_from_slice(&2u16.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        let mut body = b"WAVE".to_vec();
        body.extend_from_slice(extra);
        body.extend_from_slice(b"fmt ");
        body.extend_from_slice(&16u32.to_le_bytes());
        body.extend_from_slice(&fmt);
        body.extend_from_slice(b"data");
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn parses_pcm_and_skips_odd_chunks() {
        let list = b"LIST\x03\x00\x00\x00abc\x00"; // odd size, padded
        let w = wav(1, 1, 8000, 16, &[1, 0, 0xff, 0xff], list);
        assert_eq!(parse_wav(&w).unwrap(), vec![1, -1]);
    }

    #[test]
    fn rejects_what_it_cannot_play() {
        let d = [0u8; 4];
        assert!(matches!(
            parse_wav(&wav(1, 2, 8000, 16, &d, &[])),
            Err(WavError::Unsupported { channels: 2, .. })
        ));
        assert!(matches!(
            parse_wav(&wav(1, 1, 16000, 16, &d, &[])),
            Err(WavError::Unsupported { rate: 16000, .. })
        ));
        assert!(parse_wav(&wav(3, 1, 8000, 32, &d, &[])).is_err());
        assert_eq!(
            parse_wav(&wav(1, 1, 8000, 16, &[1, 2, 3], &[])),
            Err(WavError::BadLength(3))
        );
        let w = wav(1, 1, 8000, 16, &d, &[]);
        assert_eq!(parse_wav(&w[..w.len() - 1]), Err(WavError::Truncated(36)));
        assert_eq!(parse_wav(b"RIFX0000WAVE"), Err(WavError::NotWave));
        assert_eq!(parse_wav(b"RIFF\0\0\0\0WAVE"), Err(WavError::MissingData));
        assert_eq!(parse_wav(&[]), Err(WavError::NotWave));
    }

    #[test]
    fn player_pads_and_paces() {
        let p = Prompt::from_samples(&[0i16; 200]);
        let mut player = p.player(CodecName::Pcma, 20);
        assert_eq!(player.frame_count(), 2);
        let t0 = crate::clock::epoch();
        let mut buf = [0u8; 160];
        assert_eq!(player.poll_frame(t0, &mut buf), None); // not started
        player.start(t0);
        assert_eq!(player.poll_frame(t0, &mut buf).unwrap().samples, 160);
        assert_eq!(player.poll_frame(t0, &mut buf), None); // next due at +20 ms
        assert_eq!(player.poll_timeout(), Some(t0 + Duration::from_millis(20)));
        let f = player
            .poll_frame(t0 + Duration::from_millis(20), &mut buf)
            .unwrap();
        assert_eq!((f.len, buf[159]), (160, 0xd5));
        assert!(player.is_finished());
        assert_eq!(player.poll_timeout(), None);
        assert!(player.next_frame(&mut buf).is_none());
        assert!(p
            .player(CodecName::Pcmu, 20)
            .next_frame(&mut [0u8; 10])
            .is_none());
    }
}
