//! One shutdown signal for the whole server.
//!
//! Order on SIGTERM/SIGINT: stop accepting connections and admin requests; let each
//! connection finish the commands it has already read (their replies are written only after
//! they are durable); then the writer drains its queue, commits, and the database closes.
//!
//! A connection waits for the signal between every two reads, so it takes a [`Signal`] of its
//! own: polling that is an atomic load. Waiting on the shared channel instead registered and
//! removed a waiter under a lock the connections share, for every command (decision 0003,
//! "One read transaction per base state").

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::{oneshot, watch};

/// Sends the shutdown signal to every [`Shutdown`] handle and [`Signal`]; dropping it sends
/// it too.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
    signals: Arc<Signals>,
}

/// A task's view of the shutdown signal; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    signals: Arc<Signals>,
}

/// The [`Signal`]s not yet sent, and whether the trigger has fired.
#[derive(Debug, Default)]
struct Signals(Mutex<SignalsState>);

#[derive(Debug, Default)]
struct SignalsState {
    fired: bool,
    next: u64,
    waiting: HashMap<u64, oneshot::Sender<()>>,
}

impl Signals {
    fn state(&self) -> std::sync::MutexGuard<'_, SignalsState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    let signals = Arc::new(Signals::default());
    (Trigger { tx, signals: Arc::clone(&signals) }, Shutdown { rx, signals })
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.tx.send(true);
        let waiting = {
            let mut state = self.signals.state();
            state.fired = true;
            std::mem::take(&mut state.waiting)
        };
        for (_, tx) in waiting {
            let _ = tx.send(());
        }
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.fire();
    }
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once shutdown has been requested (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which also means: shut down.
        let _ = self.rx.wait_for(|down| *down).await;
    }

    /// A future of its own that completes once shutdown has been requested (at once if it
    /// already was), for a task that waits for it again and again: keep it, and poll it by
    /// reference.
    pub fn signal(&self) -> Signal {
        let (tx, rx) = oneshot::channel();
        let mut state = self.signals.state();
        let key = state.next;
        state.next += 1;
        if state.fired {
            let _ = tx.send(());
        } else {
            state.waiting.insert(key, tx);
        }
        Signal { rx, key, signals: Arc::clone(&self.signals), done: false }
    }
}

/// See [`Shutdown::signal`].
#[derive(Debug)]
pub struct Signal {
    rx: oneshot::Receiver<()>,
    key: u64,
    signals: Arc<Signals>,
    done: bool,
}

impl Future for Signal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        // Sent or dropped (the trigger is gone): either way, shut down.
        std::task::ready!(Pin::new(&mut self.rx).poll(cx)).ok();
        self.done = true;
        Poll::Ready(())
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        self.signals.state().waiting.remove(&self.key);
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `signal` completes within a short wait.
    async fn completes(signal: &mut Signal) -> bool {
        tokio::time::timeout(Duration::from_millis(50), signal).await.is_ok()
    }

    #[tokio::test]
    async fn a_signal_completes_when_the_trigger_fires_and_stays_complete() {
        let (trigger, shutdown) = channel();
        let mut signal = shutdown.signal();
        assert!(!completes(&mut signal).await, "not before the trigger fires");
        trigger.fire();
        assert!(completes(&mut signal).await);
        assert!(completes(&mut signal).await, "polled again, it is still complete");
        let mut late = shutdown.signal();
        assert!(completes(&mut late).await, "taken after the trigger fired: at once");
        assert!(shutdown.is_shutdown());
    }

    #[tokio::test]
    async fn a_dropped_trigger_fires_and_a_dropped_signal_is_forgotten() {
        let (trigger, shutdown) = channel();
        let mut kept = shutdown.signal();
        drop(shutdown.signal());
        assert_eq!(shutdown.signals.state().waiting.len(), 1, "the dropped one is gone");
        drop(trigger);
        assert!(completes(&mut kept).await);
        let mut rx = shutdown.clone();
        tokio::time::timeout(Duration::from_millis(50), rx.recv()).await.expect("recv completes too");
    }
}
