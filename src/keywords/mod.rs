//! Spoken keyword alerts: a facility's word-watch list spotted in its call recordings,
//! after the call, on this machine.
//!
//! Owns: the `[keywords]` configuration, turning a watch list into PocketSphinx's keyword
//! list ([`keyword_list`]), the audio preparation ([`upsample_2x`]), spotting both sides
//! of one recording ([`spot_recording`]: the inmate on the left channel, the called
//! party on the right, each decoded alone so an alert says who said the word and when),
//! and the queue's driver ([`worker`]). The recognizer itself is PocketSphinx loaded at
//! run time ([`sphinx`]); without it spotting is reported unavailable and nothing else
//! changes.
//!
//! Never in the media path: the worker takes finished recordings from a queue in the
//! database (`keyword_jobs`), so a crash loses nothing and no recording is spotted twice
//! (a claim is a lease: a node that died mid-job has its job taken over once the lease
//! runs out). Privileged calls are never recorded, and the queue skips any session marked
//! privileged all the same.
//!
//! What such a spotter can and cannot do is in `docs/behaviour.md` ("Spoken keyword
//! alerts"), with the measured recall and false alarms.

pub mod sphinx;
pub mod worker;

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The `[keywords]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeywordConfig {
    /// Spot the watch lists in finished call recordings.
    pub enabled: bool,
    /// The PocketSphinx library, opened at run time (a name the loader finds, or a path).
    pub library: String,
    /// The sphinxbase library PocketSphinx uses.
    pub sphinxbase_library: String,
    /// The acoustic model's directory (a 16 kHz model).
    pub model_dir: PathBuf,
    /// The pronunciation dictionary: a watch word not in it cannot be spotted (and is
    /// listed as such in the job).
    pub dictionary: PathBuf,
    /// The detection threshold per word of a phrase, as a power of ten: 20 means
    /// `1e-20` for one word, `1e-40` for two (capped at 1e-50). Higher finds more, and
    /// more falsely (figures in `docs/behaviour.md`).
    pub threshold_exponent: u32,
    /// Recordings spotted at once on this node (each on its own low-priority thread).
    pub workers: usize,
    /// How often the queue is looked at when it was empty.
    pub poll_interval_secs: u64,
    /// How long a claimed job is left to the node that claimed it before another takes
    /// it over.
    pub lease_secs: u64,
    /// Tries before a job is marked failed.
    pub max_attempts: u32,
    /// Recordings that ended longer ago than this are not queued (when spotting is first
    /// turned on, the backlog it works through).
    pub backlog_days: u32,
}

impl Default for KeywordConfig {
    fn default() -> Self {
        KeywordConfig {
            enabled: true,
            library: "libpocketsphinx.so.3".into(),
            sphinxbase_library: "libsphinxbase.so.3".into(),
            model_dir: PathBuf::from("/usr/share/pocketsphinx/model/en-us/en-us"),
            dictionary: PathBuf::from("/usr/share/pocketsphinx/model/en-us/cmudict-en-us.dict"),
            threshold_exponent: 20,
            workers: 1,
            poll_interval_secs: 5,
            lease_secs: 900,
            max_attempts: 3,
            backlog_days: 30,
        }
    }
}

impl KeywordConfig {
    /// The first key out of bounds and what is wrong with it.
    pub(crate) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=50).contains(&self.threshold_exponent) {
            return Err(("keywords.threshold_exponent", "must be 1 to 50"));
        }
        if !(1..=16).contains(&self.workers) {
            return Err(("keywords.workers", "must be 1 to 16"));
        }
        if !(1..=3600).contains(&self.poll_interval_secs) {
            return Err(("keywords.poll_interval_secs", "must be 1 to 3600"));
        }
        if !(60..=86_400).contains(&self.lease_secs) {
            return Err(("keywords.lease_secs", "must be 60 to 86400"));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(("keywords.max_attempts", "must be 1 to 100"));
        }
        if !(1..=3650).contains(&self.backlog_days) {
            return Err(("keywords.backlog_days", "must be 1 to 3650"));
        }
        Ok(())
    }
}

/// Which side of a call said it: the recording's left channel is the inmate's, the right
/// the called party's ([`crate::recording::wav`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Inmate,
    Called,
}

impl Party {
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Inmate => "inmate",
            Party::Called => "called",
        }
    }
    pub fn parse(s: &str) -> Option<Party> {
        match s {
            "inmate" => Some(Party::Inmate),
            "called" => Some(Party::Called),
            _ => None,
        }
    }
}

/// One phrase found by the recognizer in one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub phrase: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The recognizer's log score (base 1.0001; 0 is certain).
    pub score: i32,
}

/// A phrase said on one side of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub party: Party,
    pub word: String,
    pub offset_ms: i64,
    pub end_ms: i64,
    pub score: i64,
    /// 1.0001^score, in thousandths.
    pub confidence_milli: i64,
}

/// 1.0001^score in thousandths (0..=1000).
pub fn confidence_milli(score: i32) -> i64 {
    let p = (f64::from(score.min(0)) * 1.0001f64.ln()).exp();
    (p * 1000.0).round().clamp(0.0, 1000.0) as i64
}

/// A watch word as the list stores it: lower-case, trimmed, single spaces.
pub fn normalize(word: &str) -> String {
    word.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A watch list made into the recognizer's keyword list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeywordList {
    /// The keyword file's text: `phrase /1e-N/` a line.
    #[serde(skip)]
    pub text: String,
    /// Phrases spotted for.
    pub spotted: Vec<String>,
    /// Phrases that cannot be spotted: a word is not in the pronunciation dictionary.
    pub unknown: Vec<String>,
}

/// The keyword list for `words`: each phrase whose every word is in `dictionary`, with a
/// threshold of `1e-(exponent × words)` (capped at 1e-50), the rest listed as unknown.
pub fn keyword_list(words: &[String], dictionary: &HashSet<String>, exponent: u32) -> KeywordList {
    let mut list = KeywordList::default();
    let mut seen = HashSet::new();
    for w in words {
        let phrase = normalize(w);
        if phrase.is_empty() || !seen.insert(phrase.clone()) {
            continue;
        }
        let parts: Vec<&str> = phrase.split(' ').collect();
        if parts.iter().all(|p| dictionary.contains(*p)) {
            let exp = (exponent as usize * parts.len()).min(50);
            list.text.push_str(&format!("{phrase} /1e-{exp}/\n"));
            list.spotted.push(phrase);
        } else {
            list.unknown.push(phrase);
        }
    }
    list
}

/// 8 kHz to 16 kHz: every sample kept, a half-band windowed-sinc interpolation between
/// (31 taps: flat to 3.4 kHz, the images above 4 kHz suppressed).
pub fn upsample_2x(x: &[i16]) -> Vec<i16> {
    const HALF: usize = 8;
    // h[k] for the odd positions: sinc((k + 0.5)) windowed (Blackman), k = -HALF..HALF.
    let taps: Vec<f64> = (0..2 * HALF)
        .map(|i| {
            let t = i as f64 - HALF as f64 + 0.5;
            let sinc = (std::f64::consts::PI * t).sin() / (std::f64::consts::PI * t);
            let n = (i as f64 + 0.5) / (2 * HALF) as f64;
            let w = 0.42 - 0.5 * (std::f64::consts::TAU * n).cos()
                + 0.08 * (2.0 * std::f64::consts::TAU * n).cos();
            sinc * w
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    let mut out = Vec::with_capacity(x.len() * 2);
    for i in 0..x.len() {
        out.push(x[i]);
        let mut acc = 0.0;
        for (k, h) in taps.iter().enumerate() {
            let j = i as isize + k as isize - HALF as isize + 1;
            if let Some(&v) = usize::try_from(j).ok().and_then(|j| x.get(j)) {
                acc += f64::from(v) * h;
            }
        }
        out.push((acc / sum).round().clamp(-32768.0, 32767.0) as i16);
    }
    out
}

/// The same phrase found again within a second of an earlier find is one saying (the
/// decoder may report a word twice as its window slides): the best-scored is kept.
pub fn merge(mut found: Vec<Detection>) -> Vec<Detection> {
    found.sort_by(|a, b| a.phrase.cmp(&b.phrase).then(a.start_ms.cmp(&b.start_ms)));
    let mut out: Vec<Detection> = Vec::new();
    for d in found {
        match out.last_mut() {
            Some(last) if last.phrase == d.phrase && d.start_ms - last.start_ms < 1000 => {
                if d.score > last.score {
                    *last = d;
                }
            }
            _ => out.push(d),
        }
    }
    out.sort_by_key(|d| d.start_ms);
    out
}

/// Why a recording could not be spotted.
#[derive(Debug, thiserror::Error)]
pub enum RecordingSpotError {
    #[error("reading the recording {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spot(#[from] sphinx::SpotError),
    #[error("writing the keyword list: {0}")]
    KeywordFile(std::io::Error),
}

/// Spots `list` in both channels of the call recording at `path`: the hits, each naming
/// its side, in recording order.
pub fn spot_recording(
    sphinx: &sphinx::Sphinx,
    list: &KeywordList,
    path: &Path,
) -> Result<Vec<Hit>, RecordingSpotError> {
    let file = crate::recording::wav::read(path).map_err(|source| RecordingSpotError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if list.spotted.is_empty() {
        return Ok(Vec::new());
    }
    let mut keyfile = tempfile::NamedTempFile::new().map_err(RecordingSpotError::KeywordFile)?;
    std::io::Write::write_all(&mut keyfile, list.text.as_bytes())
        .map_err(RecordingSpotError::KeywordFile)?;
    let mut hits = Vec::new();
    for (party, channel) in [(Party::Inmate, &file.left), (Party::Called, &file.right)] {
        let pcm: Vec<i16> = channel.iter().map(|&b| file.law.decode(b)).collect();
        // A fresh decoder per side: nothing carries over from one speaker to the other.
        let mut r = sphinx.recognizer(keyfile.path())?;
        let found = merge(r.spot(&upsample_2x(&pcm))?);
        hits.extend(found.into_iter().map(|d| Hit {
            party,
            word: d.phrase,
            offset_ms: d.start_ms,
            end_ms: d.end_ms,
            score: i64::from(d.score),
            confidence_milli: confidence_milli(d.score),
        }));
    }
    hits.sort_by_key(|h| (h.offset_ms, h.party.as_str()));
    Ok(hits)
}

/// Whether spotting can run with `cfg` on this machine: `Ok` or why not.
pub fn availability(cfg: &KeywordConfig) -> Result<(), sphinx::Unavailable> {
    sphinx::Sphinx::load(cfg).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_with_unknown_words_are_listed_not_spotted() {
        let dict: HashSet<String> = ["money", "order", "yard"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let words = vec![
            " Money  Order ".into(),
            "yard".into(),
            "zzyzx".into(),
            "yard".into(),
        ];
        let l = keyword_list(&words, &dict, 10);
        assert_eq!(l.spotted, vec!["money order", "yard"]);
        assert_eq!(l.unknown, vec!["zzyzx"]);
        assert_eq!(l.text, "money order /1e-20/\nyard /1e-10/\n");
    }

    #[test]
    fn upsampling_keeps_samples_and_a_low_tone() {
        let x: Vec<i16> = (0..800)
            .map(|n| (8000.0 * (std::f64::consts::TAU * 500.0 * n as f64 / 8000.0).sin()) as i16)
            .collect();
        let y = upsample_2x(&x);
        assert_eq!(y.len(), 1600);
        for (i, v) in x.iter().enumerate() {
            assert_eq!(y[2 * i], *v);
        }
        // The new samples lie on the same 500 Hz sine (16 kHz), away from the edges.
        for (n, v) in y.iter().enumerate().take(1500).skip(100) {
            let want = 8000.0 * (std::f64::consts::TAU * 500.0 * n as f64 / 16000.0).sin();
            assert!(
                (f64::from(*v) - want).abs() < 80.0,
                "sample {n}: {v} vs {want}"
            );
        }
    }

    #[test]
    fn a_word_reported_twice_within_a_second_is_one_saying() {
        let d = |p: &str, s: i64, score: i32| Detection {
            phrase: p.into(),
            start_ms: s,
            end_ms: s + 300,
            score,
        };
        let m = merge(vec![
            d("yard", 1000, -900),
            d("yard", 1400, -800),
            d("yard", 5000, -900),
            d("money", 1200, -500),
        ]);
        assert_eq!(
            m,
            vec![
                d("money", 1200, -500),
                d("yard", 1400, -800),
                d("yard", 5000, -900)
            ]
        );
    }

    #[test]
    fn a_missing_library_or_model_is_reported_not_fatal() {
        use sphinx::Unavailable;
        let off = KeywordConfig {
            enabled: false,
            ..KeywordConfig::default()
        };
        assert_eq!(availability(&off), Err(Unavailable::Disabled));
        let no_model = KeywordConfig {
            model_dir: PathBuf::from("/nonexistent/sallyport-model"),
            ..KeywordConfig::default()
        };
        assert!(matches!(
            availability(&no_model),
            Err(Unavailable::Model { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        for f in ["mdef", "means"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::write(dir.path().join("dict"), b"hello HH AH L OW\n").unwrap();
        let no_library = KeywordConfig {
            model_dir: dir.path().to_path_buf(),
            dictionary: dir.path().join("dict"),
            library: "libsallyport-no-such-recognizer.so.3".into(),
            ..KeywordConfig::default()
        };
        let e = availability(&no_library).unwrap_err();
        assert!(matches!(e, Unavailable::Library { .. }), "{e}");
        assert!(e.to_string().contains("libpocketsphinx3"), "{e}");
    }

    #[test]
    fn confidence_is_the_score_as_a_probability() {
        assert_eq!(confidence_milli(0), 1000);
        assert_eq!(confidence_milli(-6932), 500);
        assert_eq!(confidence_milli(5), 1000);
    }
}
