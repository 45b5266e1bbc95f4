//! Leader election with a `coordination.k8s.io/v1` Lease, by client-go's rules: only the
//! holder acts. The decisions are a pure state machine ([`Elector`]) over the Lease record and
//! this replica's own monotonic clock, tested with a fake clock:
//!
//! - a candidate takes the Lease when it is absent or free, or when it has *observed* the
//!   same record (resourceVersion) unchanged for the lease duration — never by comparing the
//!   holder's `renewTime` with its own clock;
//! - the holder renews every [`RETRY`] and counts a renewal from the moment it *sent* it; it
//!   leads only until [`RENEW_DEADLINE`] after its last successful renewal, which is shorter
//!   than [`LEASE_DURATION`], so it has stopped acting before any candidate can take over;
//! - every action checks [`Leadership::leading`] first, so a holder frozen and thawed after a
//!   successor took over does nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

pub const LEASE_NAME: &str = "strand-operator";
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY: Duration = Duration::from_secs(2);

// The holder must give up before a candidate may take over, with room for a renewal or two.
const _: () = assert!(RENEW_DEADLINE.as_secs() + RETRY.as_secs() < LEASE_DURATION.as_secs());
const _: () = assert!(2 * RETRY.as_secs() < RENEW_DEADLINE.as_secs());

/// The parts of the Lease record the decisions look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    /// Changes with every write to the Lease (renewals included).
    pub version: String,
}

/// What to do with the Lease now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Create or take it (compare-and-swap on the version read).
    Take,
    /// Renew it (we hold it).
    Renew,
    /// Someone else holds it and it has not been seen unchanged for long enough.
    Wait,
}

/// One replica's view.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    /// The other holder's record and when this replica first saw it unchanged.
    seen: Option<(String, Instant)>,
    /// When the last successful take or renewal was sent.
    renewed: Option<Instant>,
    leading_since: Option<Instant>,
}

impl Elector {
    pub fn new(identity: &str) -> Self {
        Elector { identity: identity.to_owned(), seen: None, renewed: None, leading_since: None }
    }

    pub fn decide(&mut self, record: Option<&Record>, now: Instant) -> Decision {
        let Some(r) = record else { return Decision::Take };
        match r.holder.as_deref() {
            Some(h) if h == self.identity => Decision::Renew,
            None | Some("") => Decision::Take,
            Some(_) => match &self.seen {
                Some((version, since)) if *version == r.version => {
                    if now.saturating_duration_since(*since) >= LEASE_DURATION {
                        Decision::Take
                    } else {
                        Decision::Wait
                    }
                }
                _ => {
                    self.seen = Some((r.version.clone(), now));
                    Decision::Wait
                }
            },
        }
    }

    /// A take or renewal sent at `sent` succeeded.
    pub fn succeeded(&mut self, sent: Instant) {
        self.renewed = Some(self.renewed.map_or(sent, |r| r.max(sent)));
        self.leading_since.get_or_insert(sent);
        self.seen = None;
    }

    /// Whether this replica may act at `now`.
    pub fn leading(&self, now: Instant) -> bool {
        self.renewed.is_some_and(|r| now < r + RENEW_DEADLINE)
    }

    /// How long this replica may still act without another renewal.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.renewed.map_or(Duration::ZERO, |r| (r + RENEW_DEADLINE).saturating_duration_since(now))
    }

    pub fn leading_since(&self) -> Option<Instant> {
        self.leading_since
    }
}

/// The elector shared by the election loop and every action.
#[derive(Debug)]
pub struct Leadership {
    elector: Mutex<Elector>,
}

impl Leadership {
    pub fn new(identity: &str) -> Self {
        Leadership { elector: Mutex::new(Elector::new(identity)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Elector> {
        self.elector.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn leading(&self, now: Instant) -> bool {
        self.lock().leading(now)
    }

    pub fn remaining(&self, now: Instant) -> Duration {
        self.lock().remaining(now)
    }

    /// When this replica began to lead (a lease granted by a previous leader may run until
    /// a lease duration after it, for all this replica knows).
    pub fn leading_since(&self) -> Instant {
        self.lock().leading_since().unwrap_or_else(Instant::now)
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One round: reads the Lease, decides, and takes or renews it. Whether this replica leads
/// afterwards.
pub async fn round(api: &Api<Lease>, identity: &str, leadership: &Leadership) -> Result<bool, kube::Error> {
    let current = api.get_opt(LEASE_NAME).await?;
    let record = current.as_ref().map(|l| Record {
        holder: l.spec.as_ref().and_then(|s| s.holder_identity.clone()),
        version: l.metadata.resource_version.clone().unwrap_or_default(),
    });
    let decision = leadership.lock().decide(record.as_ref(), Instant::now());
    if decision == Decision::Wait {
        return Ok(leadership.leading(Instant::now()));
    }
    let sent = Instant::now();
    let secs = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity.into()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if decision == Decision::Take {
                spec.holder_identity = Some(identity.into());
                spec.acquire_time = Some(now_micro());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.renew_time = Some(now_micro());
            spec.lease_duration_seconds = Some(secs);
            // The resourceVersion from the read makes this a compare-and-swap.
            api.replace(LEASE_NAME, &PostParams::default(), &lease).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => {
            leadership.lock().succeeded(sent);
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(leadership.leading(Instant::now())),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if this replica holds it (graceful shutdown), so the next replica takes
/// over at once.
pub async fn release(api: &Api<Lease>, identity: &str) {
    if let Ok(Some(mut lease)) = api.get_opt(LEASE_NAME).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(identity)
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        let _ = api.replace(LEASE_NAME, &PostParams::default(), &lease).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(holder: &str, version: &str) -> Record {
        Record { holder: Some(holder.into()), version: version.into() }
    }

    #[test]
    fn a_candidate_waits_until_it_has_seen_the_record_unchanged_for_the_lease_duration() {
        let t0 = Instant::now();
        let mut c = Elector::new("b");
        assert_eq!(c.decide(Some(&rec("a", "1")), t0), Decision::Wait);
        assert_eq!(c.decide(Some(&rec("a", "1")), t0 + Duration::from_secs(14)), Decision::Wait);
        // A renewal resets the count.
        assert_eq!(c.decide(Some(&rec("a", "2")), t0 + Duration::from_secs(14)), Decision::Wait);
        assert_eq!(c.decide(Some(&rec("a", "2")), t0 + Duration::from_secs(28)), Decision::Wait);
        assert_eq!(c.decide(Some(&rec("a", "2")), t0 + Duration::from_secs(29)), Decision::Take);
        assert_eq!(c.decide(None, t0), Decision::Take);
        assert_eq!(c.decide(Some(&Record { holder: None, version: "3".into() }), t0), Decision::Take);
        assert_eq!(c.decide(Some(&rec("b", "4")), t0), Decision::Renew);
    }

    #[test]
    fn the_holder_stops_leading_at_the_renew_deadline_counted_from_sending() {
        let t0 = Instant::now();
        let mut a = Elector::new("a");
        assert!(!a.leading(t0));
        a.succeeded(t0);
        assert!(a.leading(t0 + RENEW_DEADLINE - Duration::from_millis(1)));
        assert!(!a.leading(t0 + RENEW_DEADLINE));
        a.succeeded(t0 + Duration::from_secs(2));
        assert!(a.leading(t0 + Duration::from_secs(11)));
        assert_eq!(a.leading_since(), Some(t0));
    }

    /// A write to the fake Lease in flight: it lands (compare-and-swap on the version it
    /// read) after a network delay and its answer comes back after another.
    struct Write {
        who: usize,
        sent: u64,
        read: u64,
        lands: u64,
        answered: u64,
        ok: Option<bool>,
    }

    proptest! {
        /// Two replicas on a fake clock: the holder renews every RETRY until it freezes; the
        /// other polls every RETRY. At no instant do two awake replicas both consider
        /// themselves leading.
        #[test]
        fn never_two_leaders(freeze in 0u64..1200, thaw in 0u64..1200, delay in 0u64..60, phase in 0u64..40) {
            // Everything in steps of 50 ms.
            let (freeze_at, thaw_after, delay, phase) = (freeze * 50, thaw * 50, delay * 50, phase * 50);
            let t0 = Instant::now();
            let ms = |m: u64| t0 + Duration::from_millis(m);
            let mut replicas = [Elector::new("a"), Elector::new("b")];
            let names = ["a", "b"];
            let (mut version, mut holder) = (1u64, 0usize);
            replicas[0].succeeded(ms(0));
            let mut writes: Vec<Write> = Vec::new();
            let thaw = freeze_at + thaw_after;
            let mut t = 0u64;
            while t < 120_000 {
                for w in writes.iter_mut().filter(|w| w.lands == t && w.ok.is_none()) {
                    let ok = w.read == version;
                    if ok {
                        version += 1;
                        holder = w.who;
                    }
                    w.ok = Some(ok);
                }
                for w in writes.iter().filter(|w| w.answered == t && w.ok == Some(true)) {
                    replicas[w.who].succeeded(ms(w.sent));
                }
                writes.retain(|w| w.answered > t);
                let awake = [t < freeze_at || t >= thaw, true];
                let offsets = [0, phase];
                for i in 0..2 {
                    if !awake[i] || !(t + offsets[i]).is_multiple_of(RETRY.as_millis() as u64) || writes.iter().any(|w| w.who == i) {
                        continue;
                    }
                    let r = rec(names[holder], &version.to_string());
                    if replicas[i].decide(Some(&r), ms(t)) != Decision::Wait {
                        writes.push(Write { who: i, sent: t, read: version, lands: t + delay + 50, answered: t + 2 * delay + 50, ok: None });
                    }
                }
                let leading = (0..2).filter(|&i| awake[i] && replicas[i].leading(ms(t))).count();
                prop_assert!(leading <= 1, "both lead at {} ms", t);
                t += 50;
            }
        }
    }
}
