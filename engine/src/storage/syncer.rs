//! The syncer: a thread that syncs the journal segment for one commit group while the writer
//! runs the next (decision 0002: "the next group forming while the previous one syncs").
//!
//! The writer appends group N and hands it to the syncer, then runs the transactions queued
//! meanwhile as group N+1 and appends them too. The syncer syncs the segment and, once N is
//! durable, finishes it on its own thread (the writer gives the function: publish N, answer
//! its clients), so N's clients do not wait for N+1 to run. N+1's frames may reach the disk
//! with N's sync; they count only once N+1's own sync returns. One job is in flight at a time,
//! and the writer takes each outcome before it starts the next.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::segment::{SegmentError, SyncHandle};

/// A sync's outcome and how long it took.
pub type Synced = (Result<(), SegmentError>, Duration);

pub struct Syncer<J, O> {
    requests: Option<mpsc::Sender<(SyncHandle, J)>>,
    outcomes: mpsc::Receiver<O>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<J: Send + 'static, O: Send + 'static> Syncer<J, O> {
    /// Starts the thread; `finish` turns each job and its sync's outcome into what
    /// [`Syncer::wait`] returns.
    pub fn spawn(finish: impl Fn(J, Synced) -> O + Send + 'static) -> std::io::Result<Syncer<J, O>> {
        let (requests, incoming) = mpsc::channel::<(SyncHandle, J)>();
        let (done, outcomes) = mpsc::channel();
        let thread = std::thread::Builder::new().name("strand-syncer".into()).spawn(move || {
            for (handle, job) in incoming {
                if done.send(finish(job, timed(&handle))).is_err() {
                    return;
                }
            }
        })?;
        Ok(Syncer { requests: Some(requests), outcomes, thread: Some(thread) })
    }

    /// Hands `job` over with the segment to sync; gives both back if the thread is gone.
    pub fn start(&self, handle: SyncHandle, job: J) -> Result<(), (SyncHandle, J)> {
        match &self.requests {
            Some(tx) => tx.send((handle, job)).map_err(|mpsc::SendError(back)| back),
            None => Err((handle, job)),
        }
    }

    /// The outcome of the job started last; `None` if the thread stopped (it does not, short
    /// of a panic in `finish`).
    pub fn wait(&self) -> Option<O> {
        self.outcomes.recv().ok()
    }
}

/// Syncs the segment behind `handle`, timed.
fn timed(handle: &SyncHandle) -> Synced {
    let started = Instant::now();
    let result = handle.sync();
    (result, started.elapsed())
}

impl<J, O> Drop for Syncer<J, O> {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
