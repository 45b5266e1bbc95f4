//! The expiry cycle: on an instance that accepts writes (the primary), removes keys whose
//! expiry has passed, as journaled transactions — so the removal replicates like any write
//! (Redis propagates a DEL), rolls back exactly, and a secondary never expires a key on its
//! own (it only hides a logically expired key from reads).
//!
//! Each run reads at most [`KEYS_PER_RUN`] due entries of the expiry index from a snapshot
//! and removes them in one transaction (stopping early past [`EXPIRY_BYTES_PER_RUN`] of
//! values), re-checking inside the writer that each key still has that expiry; a run that
//! found a full batch or stopped early is followed at once by another, otherwise the cycle
//! sleeps [`INTERVAL`]. A run's cost is thus bounded by its batch, whatever the number of
//! keys due.
//!
//! The same cycle **reclaims** the elements of deleted large collections (`storage::node`,
//! "garbage"): each run removes at most [`RECLAIM_NODES_PER_RUN`] nodes or
//! [`RECLAIM_BYTES_PER_RUN`] bytes in one journaled transaction, so deleting a collection of
//! any size never makes one huge transaction, and a secondary is told of each removal in
//! order like any write.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;
use crate::frame::Frame;
use crate::resp::cmd::db::{Db, ReadOnly};
use crate::shutdown::Shutdown;
use crate::storage::node;
use crate::storage::writer::{Abort, Committed, TxnProgram};

/// Most keys one run removes.
pub const KEYS_PER_RUN: usize = 200;
/// Most bytes of string values one expiry run removes (their before-images); the rest of its
/// batch waits for the next run, which follows at once.
pub const EXPIRY_BYTES_PER_RUN: usize = 64 * 1024 * 1024;
/// Most element nodes one reclaim run removes.
pub const RECLAIM_NODES_PER_RUN: usize = 1024;
/// Most bytes (node names and values) one reclaim run removes.
pub const RECLAIM_BYTES_PER_RUN: usize = 4 * 1024 * 1024;
/// Pause between runs that found less than a full batch.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Runs the cycle until shutdown.
pub async fn run(engine: Arc<Engine>, mut shutdown: Shutdown) {
    loop {
        let full = if engine.store.write_refusal().is_none() {
            let expired = run_once(&engine).await;
            let reclaimed = reclaim_once(&engine).await;
            expired || reclaimed
        } else {
            false
        };
        if full {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// Entries of the expiry index due at `now_ms`: (expire_at_ms, key).
pub fn due(db: &Db<'_>, now_ms: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Abort> {
    // Every entry at or before now: keys sort after the 9-byte prefix, so the bound is the
    // first entry of the next millisecond.
    let upper = node::expiry(now_ms.saturating_add(1), b"");
    let entries =
        db.kv.range((Bound::Included(node::EXPIRY_START), Bound::Excluded(&upper)), false, limit)?;
    Ok(entries
        .into_iter()
        .filter_map(|(n, _)| {
            let at = u64::from_be_bytes(*n.get(1..9)?.first_chunk::<8>()?);
            Some((at, n.get(9..)?.to_vec()))
        })
        .collect())
}

/// One run; whether it found a full batch.
async fn run_once(engine: &Engine) -> bool {
    let now_ms = crate::resp::cmd::now_ms();
    let snapshot = match engine.store.snapshot() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %crate::base::error_chain(&e), "expiry cycle cannot read");
            return false;
        }
    };
    let entries = {
        let mut kv = ReadOnly(&snapshot);
        let db = Db { kv: &mut kv, now_ms, counts: None };
        match due(&db, now_ms, KEYS_PER_RUN) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = ?e, "expiry cycle cannot read its index");
                return false;
            }
        }
    };
    drop(snapshot);
    if entries.is_empty() {
        return false;
    }
    let full = entries.len() == KEYS_PER_RUN;
    let stopped = housekeep(engine, "expiry", &engine.metrics.expired_keys_total, move |db| {
        let (mut removed, mut bytes) = (0u64, 0usize);
        for (at, key) in &entries {
            if bytes >= EXPIRY_BYTES_PER_RUN {
                return Ok((removed, true)); // the rest in the next run, at once
            }
            // Only if the key still expires then (a write since the snapshot may have
            // changed it); `head_for_write` removes an expired key as a journaled delete.
            let head = db.kv.get(&node::head(key))?.and_then(|b| node::Head::decode(&b));
            match head {
                Some(h) if h.expire_at_ms == *at => {
                    // A string's value is its before-image; a collection's elements are
                    // removed inline only when small (else reclaimed later).
                    bytes += key.len() + h.value.len();
                    if h.expired(db.now_ms) && db.head_for_write(key)?.is_none() {
                        removed += 1;
                    }
                }
                // An index entry its key no longer agrees with (both sides of an SI stream
                // set an expiry on one key): drop it, so it never holds up the cycle.
                _ => {
                    db.kv.remove(&node::expiry(*at, key))?;
                }
            }
        }
        Ok((removed, false))
    })
    .await;
    full || stopped
}

/// Runs one housekeeping transaction (`Writer::submit_housekeeping`): `work` returns how
/// many things it removed (added to `counter`) and whether more is left; that flag, or
/// `false` when the run did not commit.
async fn housekeep(
    engine: &Engine,
    what: &'static str,
    counter: &prometheus::IntCounter,
    work: impl FnOnce(&mut Db<'_>) -> Result<(u64, bool), Abort> + Send + 'static,
) -> bool {
    let program: TxnProgram<Frame> = Box::new(move |view| {
        let mut db = Db { kv: view, now_ms: crate::resp::cmd::now_ms(), counts: None };
        let (n, more) = work(&mut db)?;
        Ok(Frame::Array(vec![
            Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
            Frame::Integer(i64::from(more)),
        ]))
    });
    match engine.writer.submit_housekeeping(program).await {
        Ok(Committed::Done { output: Frame::Array(out), .. }) => match out.as_slice() {
            [Frame::Integer(n), Frame::Integer(more)] => {
                counter.inc_by(u64::try_from(*n).unwrap_or(0));
                *more != 0
            }
            _ => false,
        },
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(error = %e, "{what} run did not commit");
            false
        }
    }
}

/// One reclaim run; whether garbage is left.
async fn reclaim_once(engine: &Engine) -> bool {
    let garbage = (Bound::Included(node::GARBAGE_START), Bound::Excluded(node::GARBAGE_END));
    let pending = match engine.store.snapshot().and_then(|s| s.range(garbage, false, 1)) {
        Ok(found) => !found.is_empty(),
        Err(e) => {
            tracing::warn!(error = %crate::base::error_chain(&e), "reclaim cycle cannot read");
            false
        }
    };
    if !pending {
        return false;
    }
    housekeep(engine, "reclaim", &engine.metrics.reclaimed_nodes_total, |db| {
        let (removed, more) = db.reclaim(RECLAIM_NODES_PER_RUN, RECLAIM_BYTES_PER_RUN)?;
        Ok((removed as u64, more))
    })
    .await
}
