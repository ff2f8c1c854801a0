//! The spotting queue's driver: queues finished call recordings, claims one job at a
//! time per worker, spots it on a low-priority thread of its own and writes the result.
//!
//! `[keywords] workers` tasks each loop: queue what finished (cheap, idempotent), claim
//! the newest job, and hand it to their thread; with nothing to do they sleep
//! `poll_interval_secs`. Each thread lowers its own scheduling priority (nice 19) and
//! owns its decoder, so spotting takes only what the calls leave of the CPU and never
//! runs on the tokio workers that carry calls. When PocketSphinx or its model is missing,
//! nothing is claimed: the queue waits (and `GET /keywords/status` says why).

use super::sphinx::{dictionary_words, Sphinx, Unavailable};
use super::{keyword_list, spot_recording, Hit, KeywordConfig};
use crate::store::{JobEnd, KeywordJob, Store};
use serde_json::json;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What a spotting thread is asked: a recording and the phrases.
struct Request {
    path: PathBuf,
    words: Vec<String>,
    reply: oneshot::Sender<Result<(Vec<Hit>, serde_json::Value), String>>,
}

/// Starts the workers; returns why spotting is unavailable, if it is (then nothing is
/// started and the reason is logged).
pub fn spawn(
    store: Store,
    cfg: KeywordConfig,
    node_id: String,
    recordings_dir: PathBuf,
) -> Result<(), Unavailable> {
    let sphinx = match Sphinx::load(&cfg).and_then(|s| Ok((s, dictionary_words(&cfg.dictionary)?)))
    {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::warn!(reason = %e, "spoken keyword alerts unavailable");
            return Err(e);
        }
    };
    tracing::info!(
        workers = cfg.workers,
        model = %cfg.model_dir.display(),
        "spoken keyword alerts: spotting finished call recordings"
    );
    for n in 0..cfg.workers {
        let (tx, rx) = mpsc::channel::<Request>(1);
        let sphinx = sphinx.clone();
        let exponent = cfg.threshold_exponent;
        let spawned = std::thread::Builder::new()
            .name(format!("keywords-{n}"))
            .spawn(move || spotting_thread(sphinx, exponent, rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a keyword spotting thread");
            continue;
        }
        let (store, cfg, node, dir) = (
            store.clone(),
            cfg.clone(),
            node_id.clone(),
            recordings_dir.clone(),
        );
        tokio::spawn(async move { run(store, cfg, node, dir, tx).await });
    }
    Ok(())
}

fn spotting_thread(
    sphinx: Arc<(Sphinx, HashSet<String>)>,
    exponent: u32,
    mut rx: mpsc::Receiver<Request>,
) {
    // SAFETY: setpriority on this thread's own id (Linux: nice is per thread).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
    while let Some(req) = rx.blocking_recv() {
        let (sp, dict) = (&sphinx.0, &sphinx.1);
        let list = keyword_list(&req.words, dict, exponent);
        let words = json!({ "spotted": list.spotted, "unknown": list.unknown });
        let result = spot_recording(sp, &list, &req.path)
            .map(|hits| (hits, words))
            .map_err(|e| e.to_string());
        let _ = req.reply.send(result);
    }
}

async fn run(
    store: Store,
    cfg: KeywordConfig,
    node: String,
    dir: PathBuf,
    thread: mpsc::Sender<Request>,
) {
    let idle = Duration::from_secs(cfg.poll_interval_secs);
    loop {
        // The recordings finished since are queued once a round, not once a job: the
        // scan reads the backlog's recordings.
        let since = store.clock().wall() - chrono::Duration::days(i64::from(cfg.backlog_days));
        match store.queue_keyword_jobs(since).await {
            Ok(_) => loop {
                match step(&store, &cfg, &node, &dir, &thread).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "keyword spotting queue");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "keyword spotting queue"),
        }
        tokio::time::sleep(idle).await;
    }
}

/// Claims and spots one job; whether there was one.
async fn step(
    store: &Store,
    cfg: &KeywordConfig,
    node: &str,
    dir: &std::path::Path,
    thread: &mpsc::Sender<Request>,
) -> Result<bool, crate::store::StoreError> {
    let lease_us = i64::try_from(cfg.lease_secs).unwrap_or(i64::MAX / 2) * 1_000_000;
    let max = i64::from(cfg.max_attempts);
    let Some(job) = store.claim_keyword_job(node, lease_us, max).await? else {
        return Ok(false);
    };
    process(store, node, max, dir, thread, &job).await?;
    Ok(true)
}

async fn process(
    store: &Store,
    node: &str,
    max: i64,
    dir: &std::path::Path,
    thread: &mpsc::Sender<Request>,
    job: &KeywordJob,
) -> Result<(), crate::store::StoreError> {
    // Never processed: a privileged call (never recorded either; checked all the same).
    if job.privileged {
        let reason = json!({ "skipped": "privileged" });
        store
            .finish_keyword_job(job, node, JobEnd::Skipped, &reason, &[])
            .await?;
        return Ok(());
    }
    let words = store.watch_list(&job.facility_id).await?;
    if words.is_empty() {
        let reason = json!({ "skipped": "the facility has no watch words" });
        store
            .finish_keyword_job(job, node, JobEnd::Skipped, &reason, &[])
            .await?;
        return Ok(());
    }
    let (reply, answer) = oneshot::channel();
    let req = Request {
        path: dir.join(&job.path),
        words,
        reply,
    };
    let result = match thread.send(req).await {
        Ok(()) => answer
            .await
            .unwrap_or_else(|_| Err("the spotting thread stopped".into())),
        Err(_) => Err("the spotting thread stopped".into()),
    };
    match result {
        Ok((hits, words)) => {
            let mine = store
                .finish_keyword_job(job, node, JobEnd::Done, &words, &hits)
                .await?;
            if mine {
                tracing::info!(
                    session = %job.session_id,
                    recording = %job.recording_id,
                    hits = hits.len(),
                    "keywords spotted"
                );
            } else {
                tracing::warn!(recording = %job.recording_id, "keyword job taken over meanwhile; result dropped");
            }
        }
        Err(e) => {
            tracing::warn!(recording = %job.recording_id, error = %e, "keyword spotting failed");
            store.fail_keyword_job(job, node, max, &e).await?;
        }
    }
    Ok(())
}
