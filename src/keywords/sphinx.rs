//! PocketSphinx, loaded at run time: the few C functions keyword spotting needs.
//!
//! The library is opened with `libloading` (`dlopen`), never linked, so a machine without
//! it still builds and runs the gateway: spotting is then reported unavailable
//! ([`Unavailable`]). Debian bookworm ships it as `libpocketsphinx3` (0.8+5prealpha, which
//! brings `libsphinxbase3`) and the US English model as `pocketsphinx-en-us`.
//!
//! One [`Recognizer`] is one decoder (`ps_decoder_t`), used by one thread at a time; it is
//! made per job (loading the model takes a few hundred milliseconds, small beside a call).
//! The model is a 16 kHz one: the 8 kHz telephone audio is up-sampled first
//! ([`super::upsample_2x`]), so the model's filter bank sees what it was trained on below
//! 4 kHz and nothing above (the decoder refuses 8 kHz input with this model's
//! `feat.params`, whose upper filter is at 6.8 kHz).

use super::{Detection, KeywordConfig};
use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;

/// Why spotting cannot run on this machine.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Unavailable {
    #[error("keyword spotting is disabled (keywords.enabled = false)")]
    Disabled,
    #[error("cannot load {library}: {reason} (install the Debian packages libpocketsphinx3 and pocketsphinx-en-us)")]
    Library { library: String, reason: String },
    #[error("{library} lacks the function {symbol}")]
    Symbol { library: String, symbol: String },
    #[error("the acoustic model {path} is missing (Debian package pocketsphinx-en-us; keywords.model_dir)")]
    Model { path: String },
    #[error("the dictionary {path} cannot be read: {reason} (keywords.dictionary)")]
    Dictionary { path: String, reason: String },
}

/// A decoding that failed.
#[derive(Debug, thiserror::Error)]
pub enum SpotError {
    #[error("the decoder could not be made from the model (see the PocketSphinx log)")]
    Init,
    #[error("the keyword list was refused by the decoder")]
    Keywords,
    #[error("decoding failed: {0}")]
    Decode(&'static str),
    #[error("the keyword list file: {0}")]
    File(#[from] std::io::Error),
}

type CmdLnParseR = unsafe extern "C" fn(
    *mut c_void,
    *const c_void,
    c_int,
    *const *const c_char,
    c_int,
) -> *mut c_void;
type CmdLnFreeR = unsafe extern "C" fn(*mut c_void) -> c_int;
type PsArgs = unsafe extern "C" fn() -> *const c_void;
type PsInit = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type PsFree = unsafe extern "C" fn(*mut c_void) -> c_int;
type PsSetKws = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;
type PsSetSearch = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type PsUtt = unsafe extern "C" fn(*mut c_void) -> c_int;
type PsProcessRaw = unsafe extern "C" fn(*mut c_void, *const i16, usize, c_int, c_int) -> c_int;
type PsSegIter = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type PsSegNext = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type PsSegWord = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type PsSegFrames = unsafe extern "C" fn(*mut c_void, *mut c_int, *mut c_int);
type PsSegProb = unsafe extern "C" fn(*mut c_void, *mut i32, *mut i32, *mut i32) -> i32;

/// The functions, resolved once.
struct Api {
    cmd_ln_parse_r: CmdLnParseR,
    cmd_ln_free_r: CmdLnFreeR,
    ps_args: PsArgs,
    ps_init: PsInit,
    ps_free: PsFree,
    ps_set_kws: PsSetKws,
    ps_set_search: PsSetSearch,
    ps_start_utt: PsUtt,
    ps_end_utt: PsUtt,
    ps_process_raw: PsProcessRaw,
    ps_seg_iter: PsSegIter,
    ps_seg_next: PsSegNext,
    ps_seg_word: PsSegWord,
    ps_seg_frames: PsSegFrames,
    ps_seg_prob: PsSegProb,
}

/// The loaded library with its model: makes [`Recognizer`]s.
pub struct Sphinx {
    api: Api,
    hmm: CString,
    dict: CString,
    /// Kept open while the function pointers are in use.
    _libs: (Library, Library),
}

impl std::fmt::Debug for Sphinx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sphinx").field("hmm", &self.hmm).finish()
    }
}

fn open(name: &str) -> Result<Library, Unavailable> {
    // SAFETY: loading a shared library runs its initialisers; PocketSphinx's and
    // sphinxbase's only set up their own statics.
    unsafe { Library::new(name) }.map_err(|e| Unavailable::Library {
        library: name.to_string(),
        reason: e.to_string(),
    })
}

fn c_path(p: &Path, key: &str) -> Result<CString, Unavailable> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Unavailable::Model {
        path: format!("{} ({key} holds a NUL byte)", p.display()),
    })
}

macro_rules! sym {
    ($lib:expr, $libname:expr, $name:literal) => {{
        // SAFETY: the type is the function's C prototype in PocketSphinx 0.8+5prealpha /
        // sphinxbase (`pocketsphinx.h`, `ps_search.h`, `cmd_ln.h`).
        let s = unsafe { $lib.get(concat!($name, "\0").as_bytes()) }.map_err(|_| {
            Unavailable::Symbol {
                library: $libname.to_string(),
                symbol: $name.to_string(),
            }
        })?;
        *s
    }};
}

impl Sphinx {
    /// Opens the libraries and checks the model is there.
    pub fn load(cfg: &KeywordConfig) -> Result<Sphinx, Unavailable> {
        if !cfg.enabled {
            return Err(Unavailable::Disabled);
        }
        for p in [cfg.model_dir.join("mdef"), cfg.model_dir.join("means")] {
            if !p.is_file() {
                return Err(Unavailable::Model {
                    path: p.display().to_string(),
                });
            }
        }
        if !cfg.dictionary.is_file() {
            return Err(Unavailable::Dictionary {
                path: cfg.dictionary.display().to_string(),
                reason: "not a file".into(),
            });
        }
        let base = open(&cfg.sphinxbase_library)?;
        let ps = open(&cfg.library)?;
        let (bn, pn) = (cfg.sphinxbase_library.as_str(), cfg.library.as_str());
        let api = Api {
            cmd_ln_parse_r: sym!(base, bn, "cmd_ln_parse_r"),
            cmd_ln_free_r: sym!(base, bn, "cmd_ln_free_r"),
            ps_args: sym!(ps, pn, "ps_args"),
            ps_init: sym!(ps, pn, "ps_init"),
            ps_free: sym!(ps, pn, "ps_free"),
            ps_set_kws: sym!(ps, pn, "ps_set_kws"),
            ps_set_search: sym!(ps, pn, "ps_set_search"),
            ps_start_utt: sym!(ps, pn, "ps_start_utt"),
            ps_end_utt: sym!(ps, pn, "ps_end_utt"),
            ps_process_raw: sym!(ps, pn, "ps_process_raw"),
            ps_seg_iter: sym!(ps, pn, "ps_seg_iter"),
            ps_seg_next: sym!(ps, pn, "ps_seg_next"),
            ps_seg_word: sym!(ps, pn, "ps_seg_word"),
            ps_seg_frames: sym!(ps, pn, "ps_seg_frames"),
            ps_seg_prob: sym!(ps, pn, "ps_seg_prob"),
        };
        Ok(Sphinx {
            api,
            hmm: c_path(&cfg.model_dir, "keywords.model_dir")?,
            dict: c_path(&cfg.dictionary, "keywords.dictionary")?,
            _libs: (base, ps),
        })
    }

    /// A decoder spotting the phrases of `keyfile` (PocketSphinx's keyword list: one
    /// phrase a line, `phrase /threshold/`).
    pub fn recognizer(&self, keyfile: &Path) -> Result<Recognizer<'_>, SpotError> {
        let args: Vec<CString> = [
            c"-hmm".to_owned(),
            self.hmm.clone(),
            c"-dict".to_owned(),
            self.dict.clone(),
            c"-logfn".to_owned(),
            c"/dev/null".to_owned(),
            // Every frame is decoded, silence too: a find's frame number is then its time
            // in the recording (by default 5prealpha drops silent frames first).
            c"-remove_silence".to_owned(),
            c"no".to_owned(),
        ]
        .into_iter()
        .collect();
        let argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
        let a = &self.api;
        let argc = c_int::try_from(argv.len()).map_err(|_| SpotError::Init)?;
        // SAFETY: argv holds `argc` valid C strings alive for the call; ps_args returns
        // the decoder's static argument definitions.
        let config = unsafe {
            (a.cmd_ln_parse_r)(std::ptr::null_mut(), (a.ps_args)(), argc, argv.as_ptr(), 1)
        };
        if config.is_null() {
            return Err(SpotError::Init);
        }
        // SAFETY: config is a valid cmd_ln_t; ps_init takes its own reference.
        let decoder = unsafe { (a.ps_init)(config) };
        // SAFETY: our reference to config is released once (the decoder keeps its own).
        unsafe { (a.cmd_ln_free_r)(config) };
        if decoder.is_null() {
            return Err(SpotError::Init);
        }
        let r = Recognizer {
            sphinx: self,
            decoder,
        };
        let file = CString::new(keyfile.as_os_str().as_encoded_bytes())
            .map_err(|_| SpotError::Keywords)?;
        // SAFETY: decoder is valid; both strings are valid C strings for the call.
        if unsafe { (a.ps_set_kws)(decoder, c"kws".as_ptr(), file.as_ptr()) } != 0 {
            return Err(SpotError::Keywords);
        }
        // SAFETY: as above; the search named "kws" was just made.
        if unsafe { (a.ps_set_search)(decoder, c"kws".as_ptr()) } != 0 {
            return Err(SpotError::Keywords);
        }
        Ok(r)
    }
}

/// One decoder with its keyword list.
pub struct Recognizer<'a> {
    sphinx: &'a Sphinx,
    decoder: *mut c_void,
}

impl Recognizer<'_> {
    /// The phrases spotted in `samples` (16 kHz, 16-bit, one channel), each with its
    /// start and end in milliseconds from the first sample and the decoder's score.
    pub fn spot(&mut self, samples: &[i16]) -> Result<Vec<Detection>, SpotError> {
        let a = &self.sphinx.api;
        let d = self.decoder;
        // SAFETY: d is a valid decoder owned by self and used by this thread only.
        if unsafe { (a.ps_start_utt)(d) } < 0 {
            return Err(SpotError::Decode("ps_start_utt"));
        }
        // The whole side at once, as one utterance (`full_utt`): the model's cepstral mean
        // normalisation is `batch`, computed over what it is given; fed in blocks it
        // normalises on too little and misses words (measured).
        // SAFETY: samples points to samples.len() initialised samples for the call.
        if unsafe { (a.ps_process_raw)(d, samples.as_ptr(), samples.len(), 0, 1) } < 0 {
            return Err(SpotError::Decode("ps_process_raw"));
        }
        // SAFETY: an utterance was started above.
        if unsafe { (a.ps_end_utt)(d) } < 0 {
            return Err(SpotError::Decode("ps_end_utt"));
        }
        let mut out = Vec::new();
        // SAFETY: the iterator is walked to its end, where ps_seg_next frees it.
        let mut seg = unsafe { (a.ps_seg_iter)(d) };
        while !seg.is_null() {
            let (mut sf, mut ef): (c_int, c_int) = (0, 0);
            // SAFETY: seg is a live segment; the out-pointers are valid locals.
            unsafe { (a.ps_seg_frames)(seg, &mut sf, &mut ef) };
            // SAFETY: as above; null out-pointers are allowed.
            let score = unsafe {
                (a.ps_seg_prob)(
                    seg,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            // SAFETY: the word is a valid C string until the next ps_seg_next.
            let word = unsafe { (a.ps_seg_word)(seg) };
            if !word.is_null() {
                // SAFETY: non-null and NUL-terminated (above).
                let word = unsafe { CStr::from_ptr(word) }
                    .to_string_lossy()
                    .trim()
                    .to_string();
                // Frames are 10 ms (the default -frate 100).
                out.push(Detection {
                    phrase: word,
                    start_ms: i64::from(sf) * 10,
                    end_ms: i64::from(ef.max(sf)) * 10 + 10,
                    score,
                });
            }
            // SAFETY: advances (and at the end frees) the iterator.
            seg = unsafe { (a.ps_seg_next)(seg) };
        }
        Ok(out)
    }
}

impl Drop for Recognizer<'_> {
    fn drop(&mut self) {
        // SAFETY: the decoder was made by ps_init and is freed once.
        unsafe { (self.sphinx.api.ps_free)(self.decoder) };
    }
}

/// Reads the pronunciation dictionary's words (the first field of each line, without a
/// `(2)` variant mark), lower-case: a phrase with a word not in it cannot be spotted.
pub fn dictionary_words(path: &Path) -> Result<std::collections::HashSet<String>, Unavailable> {
    let text = std::fs::read_to_string(path).map_err(|e| Unavailable::Dictionary {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| w.split('(').next().unwrap_or(w).to_lowercase())
        .collect())
}
