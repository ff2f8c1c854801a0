//! The harness of the end-to-end tests (`sip_calls`, `browser`, `live_listen`): the real
//! gateway binary ([`gateway`]), its HTTP API ([`api`]), sipp on both sides of it with the
//! ports of one test and the audio it sends ([`sipp`]), and a WebDriver client for
//! headless Chromium ([`webdriver`]); and the router in process for the API tests
//! (`api`, `investigation`, `authorization`, `live_listen`: [`inproc`]). Each test binary
//! compiles this module and uses part of it.
#![allow(dead_code)]
// Test harness: a fixture that cannot be set up is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod api;
pub(crate) mod axe;
pub(crate) mod console;
pub(crate) mod gateway;
pub(crate) mod inproc;
pub(crate) mod mail;
pub(crate) mod seed;
pub(crate) mod sipp;
pub(crate) mod visit_media;
pub(crate) mod visit_page;
pub(crate) mod webdriver;

use std::fs;
use std::path::{Path, PathBuf};

/// The directory of one test, `CARGO_TARGET_TMPDIR/<group>/<name>-<pid>`, fresh. Dropped
/// during a panic it prints the tails of the gateway logs in it and every sipp's command,
/// errors and message trace, and stays; otherwise it is removed (kept, and said so, with
/// `SALLYPORT_TEST_KEEP=1`).
pub(crate) struct Workdir {
    pub name: String,
    pub path: PathBuf,
}

impl Workdir {
    pub(crate) fn new(group: &str, name: &str) -> Workdir {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(group)
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("test dir");
        Workdir {
            name: name.into(),
            path,
        }
    }

    pub(crate) fn dump(&self) {
        eprintln!(
            "==== {} failed; files kept in {}",
            self.name,
            self.path.display()
        );
        let mut logs: Vec<PathBuf> = fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("gateway") && n.ends_with(".log"))
            })
            .collect();
        logs.sort();
        for log in logs {
            let (shown, tail) = log_tail(&log, 150);
            eprintln!("---- {} (last {shown} lines)\n{tail}", log.display());
        }
        sipp::dump_traces(&self.path);
    }
}

impl std::ops::Deref for Workdir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        } else if std::env::var_os("SALLYPORT_TEST_KEEP").is_some() {
            eprintln!("{}: files kept in {}", self.name, self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The last `n` lines of the file at `path`: how many, and the lines.
pub(crate) fn log_tail(path: &Path, n: usize) -> (usize, String) {
    let log = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(n);
    (lines.len() - from, lines[from..].join("\n"))
}
