//! How the writer waits for work: it spins briefly before it sleeps, while waiting that way
//! pays (decision 0003, "The writer's wait").
//!
//! A client that sends one request at a time (or one pipeline) sends its next as soon as it
//! has the reply; the writer has just sent that reply and goes to sleep, and the next
//! request must wake it again — a thread hop that costs tens of microseconds on a VM, on
//! every commit. Spinning up to [`WRITER_SPIN`] first catches the next request without it.
//! When work keeps arriving later than that, the spins only burn a core: after
//! [`SPIN_MISSES_MAX`] spins in a row that caught nothing the writer sleeps at once, until a
//! sleep short enough that a spin would have caught it shows the pace has changed. Nor does
//! it spin after a group of more than [`SPIN_GROUP_TXNS_MAX`] transactions: many clients
//! are writing, their next requests are being parsed on the other cores, and a spin would
//! take a core from them (a spin that yielded the CPU instead cost the 50-client rows 8–25 %
//! of their rate; the plain spin, gated so, did not move them).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::limits::WRITER_SPIN;

/// Spins in a row that caught nothing, after which the writer stops spinning.
const SPIN_MISSES_MAX: u32 = 8;
/// The largest group after which the writer spins.
const SPIN_GROUP_TXNS_MAX: usize = 16;

/// Whether the writer spins before it sleeps (see the module's documentation).
#[derive(Debug, Default)]
pub(super) struct Idle {
    /// Spins in a row that ended without work.
    misses: u32,
    /// Transactions in the last group committed (other work counts as none).
    last_group: usize,
}

impl Idle {
    fn spins(&self) -> bool {
        self.misses < SPIN_MISSES_MAX && self.last_group <= SPIN_GROUP_TXNS_MAX
    }

    /// Notes the size of the group the writer is about to commit.
    pub(super) fn group(&mut self, txns: usize) {
        self.last_group = txns;
    }

    /// Learns from one wait: whether it spun, whether the spin caught the work, and how long
    /// it then slept (`None`: it did not sleep).
    fn note(&mut self, spun: bool, caught: bool, slept: Option<Duration>) {
        if caught || slept.is_some_and(|d| d <= WRITER_SPIN) {
            self.misses = 0;
        } else if spun {
            self.misses = self.misses.saturating_add(1);
        }
    }

    /// The next work queued, waiting as above; `None` once the queue is closed.
    pub(super) fn recv<W>(&mut self, rx: &mut mpsc::Receiver<W>) -> Option<W> {
        let spun = self.spins();
        if spun {
            let until = Instant::now() + WRITER_SPIN;
            loop {
                match rx.try_recv() {
                    Ok(work) => {
                        self.note(true, true, None);
                        return Some(work);
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return None,
                    Err(mpsc::error::TryRecvError::Empty) if Instant::now() < until => {
                        std::hint::spin_loop();
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
        }
        let started = Instant::now();
        let work = rx.blocking_recv();
        self.note(spun, false, Some(started.elapsed()));
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(1);

    #[test]
    fn spins_stop_after_misses_and_resume_when_work_comes_sooner() {
        let mut idle = Idle::default();
        for _ in 0..SPIN_MISSES_MAX {
            assert!(idle.spins());
            idle.note(true, false, Some(LONG));
        }
        assert!(!idle.spins(), "spins that catch nothing stop");
        idle.note(false, false, Some(LONG));
        assert!(!idle.spins(), "long sleeps keep it sleeping");
        idle.note(false, false, Some(WRITER_SPIN / 2));
        assert!(idle.spins(), "a sleep a spin would have covered brings the spins back");
    }

    #[test]
    fn no_spins_after_a_large_group() {
        let mut idle = Idle::default();
        idle.group(SPIN_GROUP_TXNS_MAX + 1);
        assert!(!idle.spins());
        idle.group(1);
        assert!(idle.spins());
    }

    #[test]
    fn a_caught_spin_resets_the_misses() {
        let mut idle = Idle::default();
        for _ in 0..SPIN_MISSES_MAX - 1 {
            idle.note(true, false, Some(LONG));
        }
        idle.note(true, true, None);
        for _ in 0..SPIN_MISSES_MAX - 1 {
            idle.note(true, false, Some(LONG));
        }
        assert!(idle.spins());
    }

    #[test]
    fn it_takes_what_is_queued_and_ends_when_the_queue_closes() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut idle = Idle::default();
        tx.try_send(7).unwrap();
        assert_eq!(idle.recv(&mut rx), Some(7));
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.try_send(8).unwrap();
        });
        assert_eq!(idle.recv(&mut rx), Some(8), "a wait past the spin sleeps and wakes");
        sender.join().unwrap();
        assert_eq!(idle.recv(&mut rx), None);
        for _ in 0..SPIN_MISSES_MAX * 2 {
            assert_eq!(idle.recv(&mut rx), None);
        }
    }
}
