//! Draining a node before an upgrade: it stops taking new calls, lets the calls it
//! carries finish, then exits. A rolling upgrade drains one node at a time and loses no
//! call.
//!
//! # How
//!
//! - **The signal is SIGUSR1**, sent by `sallyport drain` (which finds the process by the
//!   pid file `serve` writes: `<node.data_dir>/sallyport-<node.id>.pid`, [`pid_file`]) or
//!   by anything else (`kill -USR1`, a service manager's reload command). SIGTERM and
//!   Ctrl-C stay what they were: stop now, the calls in progress ending with reason
//!   `system`, charges as committed. A node draining still stops at once on SIGTERM.
//! - **Draining** ([`NodeHealth::drain`]): OPTIONS answers 503 (a proxy's dispatcher
//!   marks the node down and sends new calls elsewhere) and a new INVITE gets 503 with
//!   `Retry-After` (a proxy fails it over to another node at once). Everything of the calls
//!   in progress goes on: their SIP, media, charging, recording, terminate and listen.
//!   The heartbeat goes on too, so no other node takes the draining node's calls.
//! - **The exit** comes when no call and no visit has run on the node for
//!   [`SETTLE`] (an INVITE that arrived just before the drain is given the time to
//!   register its call): the HTTP API stops and the process exits 0.
//!
//! Owns: the drain signal, the pid file, the wait for the last call and `sallyport
//! drain`. Called by: [`crate::server`], the command line.

use super::health::NodeHealth;
use crate::call::live::LiveCalls;
use crate::config::Config;
use crate::visit::live::LiveVisits;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the node must be without calls before a drain ends.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Where `serve` writes its process id, for `sallyport drain`: one file per node id, so
/// nodes sharing a data directory do not overwrite each other's.
pub fn pid_file(config: &Config) -> PathBuf {
    config
        .node
        .data_dir
        .join(format!("sallyport-{}.pid", config.node.id))
}

/// The pid file of a running `serve`: written at the start, removed at a clean exit.
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's id to `path` (creating its directory).
    pub fn write(path: PathBuf) -> anyhow::Result<PidFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating node.data_dir {}", dir.display()))?;
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Completes when the drain signal (SIGUSR1) arrives; never where there is none.
async fn drain_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::user_defined1()) {
            Ok(mut s) => {
                s.recv().await;
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGUSR1: no drain"),
        }
    }
    std::future::pending::<()>().await
}

/// Waits for the drain signal, drains, and completes once the node has carried no call
/// and no visit for [`SETTLE`] (checked every `poll`).
pub async fn drain_on_signal(
    health: NodeHealth,
    live: LiveCalls,
    visits: Option<LiveVisits>,
    poll: Duration,
) {
    drain_requested().await;
    health.drain();
    let carried = || live.len() + visits.as_ref().map_or(0, |v| v.running_count());
    tracing::warn!(
        calls = carried(),
        "draining: new calls refused (OPTIONS and INVITE 503); exiting after the last call"
    );
    let mut quiet = Duration::ZERO;
    while quiet < SETTLE {
        tokio::time::sleep(poll).await;
        quiet = match carried() {
            0 => quiet + poll,
            _ => Duration::ZERO,
        };
    }
    tracing::warn!("drained: no call left; stopping");
}

/// `sallyport drain`: sends the drain signal to the `serve` of this configuration (its
/// pid file) and, with `wait`, waits until that process has exited.
pub fn request(config: &Config, wait: bool) -> anyhow::Result<()> {
    let path = pid_file(config);
    let pid = read_pid(&path)?;
    anyhow::ensure!(
        is_sallyport(pid),
        "process {pid} of the pid file {} is not sallyport: a stale pid file (the node \
         was killed?); nothing signalled",
        path.display()
    );
    send(pid, libc::SIGUSR1).with_context(|| {
        format!(
            "signalling process {pid} of {} (a stale pid file?)",
            path.display()
        )
    })?;
    println!(
        "node {} (process {pid}) is draining: new calls go to other nodes",
        config.node.id
    );
    if !wait {
        return Ok(());
    }
    while send(pid, 0).is_ok() {
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("node {} has exited: no call was lost", config.node.id);
    Ok(())
}

fn read_pid(path: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the pid file {} (is `sallyport serve` running with this \
             configuration's node.id and node.data_dir?)",
            path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("the pid file {} holds no process id", path.display()))?;
    anyhow::ensure!(
        pid > 0,
        "the pid file {} holds no process id",
        path.display()
    );
    Ok(pid)
}

/// Whether process `pid` runs sallyport, as far as `/proc` tells (where there is no
/// `/proc`, it is taken to). A pid file left by a killed node may name another process
/// by now, which SIGUSR1 would kill.
fn is_sallyport(pid: i32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    let named = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("sallyport"))
    };
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        return named(&exe);
    }
    // Another user's process: its exe is not ours to read, its command line is.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let argv0 = c.split(|b| *b == 0).next().unwrap_or_default();
        named(Path::new(&*String::from_utf8_lossy(argv0)))
    })
}

/// `kill(pid, signal)`; signal 0 only asks whether the process is there.
fn send(pid: i32, signal: i32) -> std::io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid, signal) };
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_file_is_per_node_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.node.data_dir = dir.path().join("data");
        c.node.id = "node-b".into();
        let path = pid_file(&c);
        assert!(path.ends_with("data/sallyport-node-b.pid"), "{path:?}");
        assert!(request(&c, false)
            .unwrap_err()
            .to_string()
            .contains("sallyport-node-b.pid"));
        let written = PidFile::write(path.clone()).unwrap();
        assert_eq!(read_pid(&path).unwrap(), std::process::id() as i32);
        drop(written);
        assert!(!path.exists(), "removed at exit");
        std::fs::write(&path, "nonsense").unwrap();
        assert!(read_pid(&path).is_err());
        // A pid that is not sallyport's (pid 1, the init process) is never signalled.
        std::fs::write(&path, "1\n").unwrap();
        let e = request(&c, false).unwrap_err().to_string();
        assert!(e.contains("stale pid file"), "{e}");
    }
}
