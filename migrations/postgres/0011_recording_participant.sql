-- Recordings of video visits (issue 11) ------------------------------------------------------
-- A call has one recording: a stereo WAV holding both sides ('both'). A video visit has one
-- WebM file per participant, so its session has two recordings: the inmate's ('inmate', from
-- the kiosk) and the visitor's ('visitor', from the family's browser). What kind of media a
-- file holds is told by `format` ('wav-pcmu', 'wav-pcma', 'webm-vp8-opus'). One session never
-- has two recordings of the same participant.
ALTER TABLE recordings ADD COLUMN participant TEXT NOT NULL DEFAULT 'both'
    CHECK (participant IN ('both', 'inmate', 'visitor'));
CREATE UNIQUE INDEX recordings_session_participant ON recordings (session_id, participant);
