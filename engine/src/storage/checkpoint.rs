//! The checkpointer: a thread that brings the database file (the base) up to date from the
//! overlay's frozen generations, oldest first, each in one durable redb commit holding its
//! nodes' last values, its journal records and the stream seqnos as of its end — so the
//! database's last journal seqno *is* its checkpoint. It then removes the journal segments
//! whose records the base now holds, and trims the base's journal as [`retention`] allows.
//!
//! Only the writer freezes generations (between groups, once they are durable), and it wakes
//! the checkpointer; it also waits for the checkpointer to drain before it changes the base
//! itself (a metadata change, an applied batch of replicated records), or pauses it (a
//! rollback, see `writer::rollback`). A failed
//! checkpoint is logged, counted and retried; commits go on in the journal meanwhile, until
//! the overlay's bound makes the writer wait (and then fail writes with the error).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::overlay::Generation;
use super::retention::{self, Budget, Retention};
use super::{DATA, JOURNAL, STREAMS, Store, StoreError, now_micros, redb_err};
use crate::base::error_chain;
use crate::limits::CHECKPOINT_INTERVAL;
use crate::metrics::Metrics;

/// How long a failed checkpoint waits before it is tried again.
const RETRY: Duration = Duration::from_millis(500);

#[derive(Default)]
struct State {
    stop: bool,
    /// A checkpoint is under way (its segment removal included).
    busy: bool,
    /// The writer holds the base where it is (see [`Checkpointer::pause`]).
    paused: bool,
    /// Why the last checkpoint failed; taken by the next wait, cleared by a success.
    failure: Option<StoreError>,
    /// The last checkpoint failed on a redb I/O error: redb refuses all writes until the
    /// file is reopened, which the writer does (see [`Checkpointer::take_io_failure`]).
    io_failed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the checkpointer: a generation was frozen, or it should stop.
    wake: Condvar,
    /// Wakes whoever waits for a drain: a checkpoint finished or failed.
    progress: Condvar,
}

/// Handle to the checkpointer thread (held by the writer).
pub struct Checkpointer {
    shared: Arc<Shared>,
    store: Arc<Store>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread; `ask_freeze` asks the writer to freeze the active generation (called
    /// when it has held commits for a checkpoint interval with nothing frozen).
    pub fn spawn(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        retention: Retention,
        ask_freeze: Box<dyn Fn() + Send>,
    ) -> std::io::Result<Checkpointer> {
        let shared = Arc::new(Shared::default());
        let (s, st) = (shared.clone(), store.clone());
        let handle = std::thread::Builder::new()
            .name("strand-checkpoint".into())
            .spawn(move || run(&s, &st, &metrics, &retention, ask_freeze.as_ref()))?;
        Ok(Checkpointer { shared, store, handle: Some(handle) })
    }

    /// Tells the checkpointer a generation was frozen.
    pub fn wake(&self) {
        let _state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared.wake.notify_all();
    }

    /// Waits until no frozen generation is left; fails with the checkpointer's error if a
    /// checkpoint fails meanwhile (or if the thread is gone).
    pub fn drain(&self) -> Result<(), StoreError> {
        self.wait_until(|state| !state.busy && self.store.overlay.frozen() == 0)
    }

    /// Waits until the overlay holds fewer than `bytes`, or nothing frozen is left to
    /// checkpoint: the writer's back-pressure. It waits only as long as the overlay stays
    /// over the bound (usually the oldest generation), and then fills the next while the
    /// checkpointer writes what it froze — where waiting for a drain made the two take turns.
    /// Fails as [`Checkpointer::drain`] does.
    pub fn wait_below(&self, bytes: usize) -> Result<(), StoreError> {
        let overlay = &self.store.overlay;
        self.wait_until(|_| overlay.bytes() < bytes || overlay.frozen() == 0)
    }

    fn wait_until(&self, done: impl Fn(&State) -> bool) -> Result<(), StoreError> {
        let mut state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failure = None;
        self.shared.wake.notify_all();
        while !done(&state) {
            if let Some(e) = state.failure.take() {
                return Err(e);
            }
            if self.handle.as_ref().is_none_or(|h| h.is_finished()) {
                return Err(gone());
            }
            state = self.shared.progress.wait_timeout(state, RETRY).unwrap_or_else(PoisonError::into_inner).0;
        }
        Ok(())
    }

    /// Holds the base where it is: waits for a checkpoint under way to finish and takes no
    /// further generation until the returned guard is dropped. A rollback within the overlay
    /// takes versions out of generations the checkpointer must then not be applying. Fails
    /// if the thread is gone.
    pub fn pause(&self) -> Result<Paused, StoreError> {
        let mut state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.paused = true;
        let paused = Paused { shared: Arc::clone(&self.shared) };
        while state.busy {
            if self.handle.as_ref().is_none_or(|h| h.is_finished()) {
                // The lock goes before the guard, whose drop takes it.
                drop(state);
                return Err(gone());
            }
            state = self.shared.progress.wait_timeout(state, RETRY).unwrap_or_else(PoisonError::into_inner).0;
        }
        drop(state);
        Ok(paused)
    }

    /// Whether a checkpoint failed on a redb I/O error that [`Checkpointer::take_io_failure`]
    /// has not yet taken.
    pub fn io_failed(&self) -> bool {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).io_failed
    }

    /// Whether a checkpoint failed on a redb I/O error since the last call: the writer then
    /// closes and reopens the file.
    pub fn take_io_failure(&self) -> bool {
        std::mem::take(&mut self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).io_failed)
    }

    /// Stops the thread once it has no frozen generation left to apply.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The checkpointer is paused while this lives (see [`Checkpointer::pause`]).
pub struct Paused {
    shared: Arc<Shared>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).paused = false;
        self.shared.wake.notify_all();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The checkpoint thread is gone (it panicked).
fn gone() -> StoreError {
    StoreError::Invalid {
        reason: "the checkpoint thread has stopped; restart the engine (the journal keeps every commit)"
            .into(),
    }
}

fn run(shared: &Shared, store: &Store, metrics: &Metrics, retention: &Retention, ask_freeze: &dyn Fn()) {
    loop {
        let generation = {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if !state.paused
                    && let Some(g) = store.overlay.oldest_frozen()
                {
                    state.busy = true;
                    break g;
                }
                if state.stop {
                    return;
                }
                let (next, waited) = shared
                    .wake
                    .wait_timeout(state, CHECKPOINT_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner);
                state = next;
                if waited.timed_out() && !store.overlay.active().is_empty() {
                    ask_freeze();
                }
            }
        };
        let started = Instant::now();
        let outcome = apply(store, &generation).and_then(|(added, records)| {
            store.journal_resized(i64::try_from(added).unwrap_or(i64::MAX));
            let removed = store.overlay.checkpointed(&generation);
            debug_assert!(removed, "only the checkpointer removes generations, oldest first");
            super::remove_segments(store.journal_dir(), generation.last_seqno()).map(|_| records)
        });
        let mut trim_io_failed = false;
        if let Ok(records) = outcome
            && store.trimming()
            && let Err(e) = trim_journal(store, metrics, retention, generation.last_seqno(), records)
        {
            // The checkpoint stands; the next one trims again (after the writer reopened the
            // file, if redb failed: it refuses writes until then).
            metrics.journal_trim_failures_total.inc();
            tracing::error!(error = %error_chain(&e), "trimming the journal failed; tried again after the next checkpoint");
            trim_io_failed = matches!(e, StoreError::Redb { .. });
        }
        let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.busy = false;
        state.io_failed |= trim_io_failed;
        match outcome {
            Ok(_) => {
                state.failure = None;
                metrics.checkpoints_total.inc();
                metrics.checkpoint_duration_seconds.observe(started.elapsed().as_secs_f64());
                metrics
                    .checkpoint_seqno
                    .set(i64::try_from(store.overlay.checkpoint_seqno()).unwrap_or(i64::MAX));
                metrics.overlay_bytes.set(i64::try_from(store.overlay.bytes()).unwrap_or(i64::MAX));
                metrics.journal_bytes.set(i64::try_from(store.journal_bytes()).unwrap_or(i64::MAX));
                shared.progress.notify_all();
            }
            Err(e) => {
                metrics.checkpoint_failures_total.inc();
                if state.stop {
                    // Stopping: the journal segments keep every commit for the next start.
                    tracing::warn!(error = %error_chain(&e), "checkpoint failed while stopping; the next start replays the journal");
                    return;
                }
                tracing::error!(error = %error_chain(&e), "checkpoint failed; retrying");
                state.io_failed |= matches!(e, StoreError::Redb { .. });
                state.failure = Some(e);
                shared.progress.notify_all();
                drop(shared.wake.wait_timeout(state, RETRY));
            }
        }
    }
}

/// Takes off the base's journal what `retention` allows now that it holds up to `checkpoint`,
/// saying loudly when a limit takes records a pin still needs.
fn trim_journal(
    store: &Store,
    metrics: &Metrics,
    retention: &Retention,
    checkpoint: u64,
    brought: u64,
) -> Result<(), StoreError> {
    let pin = store.lowest_pin();
    let total = store.journal_file_bytes();
    let over_limit =
        retention.retain_age.is_some() || retention.retain_bytes.is_some_and(|limit| total > limit);
    if !over_limit && total <= retention.keep_bytes {
        return Ok(());
    }
    let budget = Budget {
        total,
        released: pin.as_ref().map_or(checkpoint, |(_, from)| from.saturating_sub(1).min(checkpoint)),
        last: checkpoint,
        keep_bytes: retention.keep_bytes,
        retain_bytes: retention.retain_bytes,
        age_cutoff_micros: retention
            .retain_age
            .map(|age| now_micros().saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX))),
    };
    let first_before = store.journal_first();
    let mut past_pins = None;
    let mut records = 0;
    let commit = |txn| store.commit_without_data(txn);
    retention::trim(store.db()?.as_ref(), store.journal_base(), &budget, brought, commit, |batch| {
        // Published batch by batch: a failure later leaves the store agreeing with the file.
        store.journal_trimmed(batch);
        metrics.journal_trimmed_records_total.inc_by(batch.records);
        metrics.journal_first_seqno.set(i64::try_from(batch.base.first()).unwrap_or(i64::MAX));
        past_pins = batch.past_pins.or(past_pins);
        records += batch.records;
    })?;
    if let (Some(upto), Some((holder, from))) = (past_pins, pin) {
        let from = from.max(first_before);
        metrics.journal_trimmed_needed_total.inc_by((upto + 1).saturating_sub(from));
        tracing::error!(
            holder,
            needed_from = from,
            trimmed_to = upto,
            "the journal's retention limit took off records {holder} still needs: it must be re-seeded"
        );
    }
    if records > 0 {
        tracing::debug!(records, first = store.journal_first(), "trimmed the journal");
    }
    Ok(())
}

/// Applies `generation` to the base in one durable commit; returns the journal bytes it added
/// and how many records it holds.
fn apply(store: &Store, generation: &Generation) -> Result<(u64, u64), StoreError> {
    let db = store.db()?;
    let txn = db.begin_write().map_err(redb_err("begin a checkpoint"))?;
    let mut added = 0;
    let mut records = 0;
    {
        let mut data = txn.open_table(DATA).map_err(redb_err("open the data table"))?;
        generation.try_for_each_last(|key, value| {
            match value {
                Some(v) => data.insert(key, v).map(drop),
                None => data.remove(key).map(drop),
            }
            .map_err(redb_err("checkpoint a node"))
        })?;
        let mut journal = txn.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
        generation.try_for_each_record(|seqno, record| {
            // A retried checkpoint may find its records there already (a commit that reported
            // an error can still have reached the disk): only new ones add to the size.
            let replaced =
                journal.insert(seqno, record).map_err(redb_err("checkpoint a journal record"))?.is_some();
            if !replaced {
                added += retention::stored_bytes(record).unsigned_abs();
            }
            records += 1;
            Ok::<(), StoreError>(())
        })?;
        let mut streams = txn.open_table(STREAMS).map_err(redb_err("open the streams table"))?;
        for (stream, seqno) in generation.streams().iter().enumerate() {
            let stream = u8::try_from(stream).unwrap_or(0);
            streams.insert(stream, *seqno).map_err(redb_err("checkpoint the stream seqnos"))?;
        }
    }
    let _change = store.base_change();
    txn.commit().map_err(redb_err("commit a checkpoint"))?;
    Ok((added, records))
}
