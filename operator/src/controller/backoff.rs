//! Per-object back-off after failed reconciles: 1 s, doubling to 60 s; reset by a success,
//! dropped when the object goes. Pure: the controllers record each failure exactly once
//! (in `error_policy`) and each success once (in the reconcile).

use std::collections::HashMap;
use std::time::Duration;

pub const FIRST: Duration = Duration::from_secs(1);
pub const MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Backoff {
    failures: HashMap<String, u32>,
}

impl Backoff {
    /// Records a failure of `key`; how long to wait before the next try.
    pub fn failed(&mut self, key: &str) -> Duration {
        let n = self.failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let exp = (*n - 1).min(16);
        FIRST.saturating_mul(1 << exp).min(MAX)
    }

    pub fn succeeded(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// Drops the state of objects that no longer exist.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.failures.retain(|k, _| live(k));
    }

    pub fn len(&self) -> usize {
        self.failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_doubling_to_sixty_reset_by_success_and_pruned() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed("Family/ns/a").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.succeeded("Family/ns/a");
        assert_eq!(b.failed("Family/ns/a"), FIRST);
        b.failed("Family/ns/b");
        b.retain(|k| k == "Family/ns/b");
        assert_eq!(b.len(), 1);
        assert_eq!(b.failed("Family/ns/a"), FIRST);
    }
}
