//! What a recording file holds, and whose: the two facts every format-aware step needs
//! (the file's name, the start-up repair, the integrity check's listing, the API's content
//! type), taken from the `recordings` row.
//!
//! - [`MediaKind`]: a call's audio (stereo G.711 in WAV, `wav-pcmu` / `wav-pcma`) or a
//!   visit's video (VP8 and Opus in WebM, `webm-vp8-opus`). The row's `format` names it;
//!   a file's extension does too, for files no row names.
//! - [`Participant`]: a call has one recording holding both sides (`both`: left channel
//!   the inmate, right the called party); a video visit has one file per participant
//!   (`inmate`, `visitor`), so its session has two recordings, one of each.
//!
//! Calls nothing; pure.

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

/// The kind of media a recording file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// A call: stereo G.711 in WAV ([`super::wav`]).
    CallAudio,
    /// A video visit, one participant: VP8 and Opus in WebM ([`super::webm`]).
    VisitVideo,
}

impl MediaKind {
    /// Every kind, for listings.
    pub const ALL: [MediaKind; 2] = [MediaKind::CallAudio, MediaKind::VisitVideo];

    /// The file name's extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            MediaKind::CallAudio => "wav",
            MediaKind::VisitVideo => "webm",
        }
    }

    /// The HTTP `Content-Type` of its files.
    pub fn content_type(self) -> &'static str {
        match self {
            MediaKind::CallAudio => "audio/wav",
            MediaKind::VisitVideo => "video/webm",
        }
    }

    /// The kind a `recordings.format` names (`wav-…`, `webm-…`); `None` for a format this
    /// build does not know.
    pub fn of_format(format: &str) -> Option<MediaKind> {
        let family = format.split('-').next().unwrap_or_default();
        MediaKind::ALL
            .into_iter()
            .find(|k| k.extension().eq_ignore_ascii_case(family))
    }

    /// The kind a file name's extension names (case-insensitive); `None` for other files.
    pub fn of_path(path: &str) -> Option<MediaKind> {
        let (_, ext) = path.rsplit_once('.')?;
        MediaKind::ALL
            .into_iter()
            .find(|k| k.extension().eq_ignore_ascii_case(ext))
    }

    /// The kind of a row's file: its format's, else its path's (a row written by a build
    /// that knew a format this one does not still names its file).
    pub fn of_recording(format: &str, path: &str) -> Option<MediaKind> {
        MediaKind::of_format(format).or_else(|| MediaKind::of_path(path))
    }
}

/// Whose media a recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Participant {
    /// Both sides in one file: a call (stereo).
    Both,
    /// The inmate's side of a visit (the kiosk's camera and microphone).
    Inmate,
    /// The visitor's side of a visit (the family's browser).
    Visitor,
}

impl Participant {
    pub fn as_str(self) -> &'static str {
        match self {
            Participant::Both => "both",
            Participant::Inmate => "inmate",
            Participant::Visitor => "visitor",
        }
    }

    pub fn parse(s: &str) -> Option<Participant> {
        [Participant::Both, Participant::Inmate, Participant::Visitor]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// Where a recording starting at `at` (UTC) is written, relative to the recordings
/// directory: `YYYY/MM/DD/<session>.wav` for a call, `YYYY/MM/DD/<session>-<participant>.webm`
/// for a participant of a visit (two files of one session never share a name).
pub fn relative_path(
    session_id: &str,
    kind: MediaKind,
    participant: Participant,
    at: DateTime<Utc>,
) -> String {
    let day = format!("{:04}/{:02}/{:02}", at.year(), at.month(), at.day());
    let ext = kind.extension();
    match participant {
        Participant::Both => format!("{day}/{session_id}.{ext}"),
        p => format!("{day}/{session_id}-{}.{ext}", p.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_and_extensions_name_the_kind() {
        assert_eq!(MediaKind::of_format("wav-pcmu"), Some(MediaKind::CallAudio));
        assert_eq!(MediaKind::of_format("wav-pcma"), Some(MediaKind::CallAudio));
        assert_eq!(
            MediaKind::of_format(super::super::webm::FORMAT_NAME),
            Some(MediaKind::VisitVideo)
        );
        assert_eq!(MediaKind::of_format("ogg-opus"), None);
        assert_eq!(MediaKind::of_path("a/b.WAV"), Some(MediaKind::CallAudio));
        assert_eq!(MediaKind::of_path("a/b.webm"), Some(MediaKind::VisitVideo));
        assert_eq!(MediaKind::of_path("a/b.webm.part"), None);
        assert_eq!(MediaKind::of_path("webm"), None);
        assert_eq!(
            MediaKind::of_recording("mp4-h264", "x/y.webm"),
            Some(MediaKind::VisitVideo)
        );
    }

    #[test]
    fn a_visit_session_has_one_file_per_participant() {
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 23, 59, 59).unwrap();
        assert_eq!(
            relative_path("ses_1", MediaKind::CallAudio, Participant::Both, at),
            "2026/03/02/ses_1.wav"
        );
        assert_eq!(
            relative_path("ses_2", MediaKind::VisitVideo, Participant::Inmate, at),
            "2026/03/02/ses_2-inmate.webm"
        );
        assert_eq!(
            relative_path("ses_2", MediaKind::VisitVideo, Participant::Visitor, at),
            "2026/03/02/ses_2-visitor.webm"
        );
        for p in [Participant::Both, Participant::Inmate, Participant::Visitor] {
            assert_eq!(Participant::parse(p.as_str()), Some(p));
        }
        assert_eq!(Participant::parse("guard"), None);
    }
}
