//! The controllers. [`instance`] turns an Instance into the objects that run its engine and
//! makes sure its Family object exists; [`family`] runs each family's lifecycle (the pure
//! plans of [`crate::family`]), carries out the engine calls and writes the status of the
//! family, its Instances and its links; [`link`] looks after links none of whose Instances
//! exist. Every read comes from the reflector stores in [`Stores`] (one watch per kind, shared
//! by all controllers); writes are server-side applies made only when something changed.

pub mod backoff;
pub mod family;
pub mod instance;
pub mod link;
pub mod triggers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::{Condition, Family, Instance, ReplicationLink};
use crate::desired::{ADMIN_TOKEN_KEY, PORT_ADMIN, PORT_REPL, admin_secret_name};
use crate::engine_client::EngineError;
use crate::family::Timing;
use crate::leader::Leadership;
use crate::metrics::Metrics;

/// Field manager of every object and status the operator applies.
pub const MANAGER: &str = "strand-operator";
/// Request annotations (docs/lifecycle.md).
pub const ANNOTATION_SWITCHOVER: &str = "strand.dev/switchover";
pub const ANNOTATION_FAILOVER: &str = "strand.dev/failover";
pub const ANNOTATION_ROLLBACK: &str = "strand.dev/rollback";
pub const ANNOTATION_DRAIN: &str = "strand.dev/drain";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    #[error("engine admin call failed")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Invalid(String),
    #[error("not leading any more: this replica stops acting")]
    NotLeading,
}

impl Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Engine(e) => e.kind(),
            Error::Invalid(_) => "invalid",
            Error::NotLeading => "not_leading",
        }
    }
}

/// The reflector stores every reconcile reads from.
#[derive(Clone)]
pub struct Stores {
    pub instances: Store<Instance>,
    pub links: Store<ReplicationLink>,
    pub families: Store<Family>,
    /// Engine pods (label `app.kubernetes.io/managed-by=strand-operator`).
    pub pods: Store<Pod>,
    /// The operator's Secrets (same label): admin tokens and the replication secret.
    pub secrets: Store<Secret>,
    /// The Instances' StatefulSets (same label): the image each runs now.
    pub statefulsets: Store<StatefulSet>,
}

impl Stores {
    pub fn instances_in(&self, ns: &str) -> Vec<Arc<Instance>> {
        let mut v = self.instances.state_filter(|i| i.metadata.namespace.as_deref() == Some(ns));
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        v
    }

    pub fn links_in(&self, ns: &str) -> Vec<Arc<ReplicationLink>> {
        let mut v = self.links.state_filter(|l| l.metadata.namespace.as_deref() == Some(ns));
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        v
    }

    pub fn families_in(&self, ns: &str) -> Vec<Arc<Family>> {
        self.families.state_filter(|f| f.metadata.namespace.as_deref() == Some(ns))
    }

    /// The image Instance `name`'s StatefulSet runs it with now (`None`: no StatefulSet yet).
    pub fn set_image(&self, ns: &str, name: &str) -> Option<String> {
        let set = self.statefulsets.get(&ObjectRef::new(name).within(ns))?;
        engine_image(set.spec.as_ref()?.template.spec.as_ref()?)
    }

    /// The image the ready pod of Instance `name` runs.
    pub fn pod_image(&self, ns: &str, name: &str) -> Option<String> {
        self.endpoint(ns, name)?;
        let pod = self.pods.get(&ObjectRef::new(&format!("{name}-0")).within(ns))?;
        engine_image(pod.spec.as_ref()?)
    }

    /// Where the engine of Instance `name` answers, once its pod runs and is ready.
    pub fn endpoint(&self, ns: &str, name: &str) -> Option<Endpoint> {
        let pod = self.pods.get(&ObjectRef::new(&format!("{name}-0")).within(ns))?;
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let status = pod.status.as_ref()?;
        let ready = status
            .conditions
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
        if !ready {
            return None;
        }
        let secret = self.secrets.get(&ObjectRef::new(&admin_secret_name(name)).within(ns))?;
        let token = secret
            .data
            .as_ref()
            .and_then(|d| d.get(ADMIN_TOKEN_KEY))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())?;
        Some(Endpoint { admin: format!("{ip}:{PORT_ADMIN}"), repl: format!("{ip}:{PORT_REPL}"), token })
    }
}

/// Lifecycle timing (chart values).
#[derive(Debug, Clone)]
pub struct Config {
    pub timing: Timing,
    /// Role lease granted to each primary; renewed every `refresh`.
    pub lease: Duration,
    /// How often each family is looked at when nothing happens.
    pub refresh: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { timing: Timing::default(), lease: Duration::from_secs(15), refresh: Duration::from_secs(5) }
    }
}

/// What the operator remembers between reconciles, by its own monotonic clock: when it last
/// sent each primary a lease, and since when each family's primary has been unavailable.
#[derive(Debug, Default)]
pub struct Book {
    lease_sent: HashMap<String, Instant>,
    /// Instances seen to require a role lease (their status said so, or a grant succeeded):
    /// only for those does a lapse prove anything.
    lease_required: std::collections::HashSet<String>,
    unavailable_since: HashMap<String, Instant>,
    /// The last Family status this replica wrote, by family: newer than the cache until the
    /// watch catches up (compared by `status.revision`).
    written: HashMap<String, crate::crd::FamilyStatus>,
    /// When each engine's admin API last failed to answer a status call (cleared when it
    /// answers): another family that only looks at it (an SI source at its target's primary)
    /// takes that answer instead of waiting out a timeout of its own.
    unreachable: HashMap<String, Instant>,
}

impl Book {
    pub fn lease_sent(&mut self, key: &str, at: Instant) {
        self.lease_sent.insert(key.to_owned(), at);
    }

    pub fn lease_required(&mut self, key: &str) {
        self.lease_required.insert(key.to_owned());
    }

    /// Whether a lease granted to `key` has surely lapsed: it was seen to require one, and
    /// nothing this replica sent can still run (a grant carries the wall-clock time it runs
    /// out by — its send time plus the lease; the call timeout covers clock skew), nor can
    /// what a previous leader sent before this replica began to lead.
    pub fn lease_lapsed(
        &self,
        key: &str,
        now: Instant,
        leading_since: Instant,
        lease: Duration,
        call_timeout: Duration,
    ) -> bool {
        self.lease_required.contains(key) && self.presumed_gone(key, now, leading_since, lease, call_timeout)
    }

    /// The same timing without knowing that a lease is required: what a forced failover,
    /// vouched for by a person, waits for.
    pub fn presumed_gone(
        &self,
        key: &str,
        now: Instant,
        leading_since: Instant,
        lease: Duration,
        call_timeout: Duration,
    ) -> bool {
        let from = self.lease_sent.get(key).copied().map_or(leading_since, |sent| sent.max(leading_since));
        now >= from + lease + call_timeout
    }

    /// The newer of the cached Family status and the one this replica last wrote.
    pub fn freshest(&self, key: &str, cached: crate::crd::FamilyStatus) -> crate::crd::FamilyStatus {
        match self.written.get(key) {
            Some(w) if w.revision > cached.revision => w.clone(),
            _ => cached,
        }
    }

    pub fn wrote(&mut self, key: &str, status: &crate::crd::FamilyStatus) {
        self.written.insert(key.to_owned(), status.clone());
    }

    /// Records whether `key` is available now; how long it has been unavailable.
    pub fn availability(&mut self, key: &str, available: bool, now: Instant) -> Duration {
        if available {
            self.unavailable_since.remove(key);
            return Duration::ZERO;
        }
        now.saturating_duration_since(*self.unavailable_since.entry(key.to_owned()).or_insert(now))
    }

    /// Records whether `key`'s engine answered a status call at `now`.
    pub fn reached(&mut self, key: &str, answered: bool, now: Instant) {
        if answered {
            self.unreachable.remove(key);
        } else {
            self.unreachable.insert(key.to_owned(), now);
        }
    }

    /// How long ago `key`'s engine last failed to answer, if that was less than `within` ago
    /// and it has not answered since.
    pub fn recently_unreachable(&self, key: &str, now: Instant, within: Duration) -> Option<Duration> {
        let ago = now.saturating_duration_since(*self.unreachable.get(key)?);
        (ago < within).then_some(ago)
    }

    /// Forgets everything about families and instances not in `live`.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.unreachable.retain(|k, _| live(k));
        self.lease_sent.retain(|k, _| live(k));
        self.lease_required.retain(|k| live(k));
        self.unavailable_since.retain(|k, _| live(k));
        self.written.retain(|k, _| live(k));
    }
}

/// Shared by every reconcile.
pub struct Ctx {
    pub client: kube::Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub stores: Stores,
    pub config: Config,
    pub leader: Arc<Leadership>,
    pub backoff: Mutex<backoff::Backoff>,
    pub book: Mutex<Book>,
    pub events: Mutex<EventLimiter>,
}

/// How often the same Event (same object, same reason) may be published: a flapping engine or
/// a drain waiting on every reconcile says so once a minute, not on every pass.
pub const EVENT_REPEAT_INTERVAL: Duration = Duration::from_secs(60);

/// When each (object, reason) was last published. Pure: the caller passes the clock.
#[derive(Debug, Default)]
pub struct EventLimiter {
    last: HashMap<(String, String), Instant>,
}

impl EventLimiter {
    /// Whether an Event of `reason` about `object` may go out at `now`; if so, it is recorded.
    pub fn allow(&mut self, object: &str, reason: &str, now: Instant) -> bool {
        // Forget what is older than the interval: the map holds only recent publications.
        self.last.retain(|_, at| now.saturating_duration_since(*at) < EVENT_REPEAT_INTERVAL);
        let key = (object.to_owned(), reason.to_owned());
        if self.last.contains_key(&key) {
            return false;
        }
        self.last.insert(key, now);
        true
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

impl Ctx {
    /// Fails unless this replica still leads by its own clock; called before every write.
    pub fn check_leading(&self) -> Result<(), Error> {
        if self.leader.leading(Instant::now()) { Ok(()) } else { Err(Error::NotLeading) }
    }

    pub fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn backoff(&self) -> std::sync::MutexGuard<'_, backoff::Backoff> {
        self.backoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes an Event about `object` (best effort: a failure is logged), at most once per
    /// [`EVENT_REPEAT_INTERVAL`] for the same object and reason.
    pub async fn publish(
        &self,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        if self.check_leading().is_err() {
            return;
        }
        let who = format!(
            "{}/{}/{}",
            object.kind.as_deref().unwrap_or(""),
            object.namespace.as_deref().unwrap_or(""),
            object.name.as_deref().unwrap_or("")
        );
        let allowed = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).allow(
            &who,
            reason,
            Instant::now(),
        );
        if !allowed {
            tracing::debug!(object = %who, reason, %note, "event repeated within a minute; not published again");
            return;
        }
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(error = %e, "cannot publish an event");
        }
    }
}

/// Where an instance's engine answers.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub admin: String,
    pub repl: String,
    pub token: String,
}

/// A condition, keeping its transition time when its status did not change.
pub fn condition(
    previous: &[Condition],
    kind: &str,
    status: Option<bool>,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = match status {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    };
    let since = previous
        .iter()
        .find(|c| c.r#type == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| k8s_openapi::jiff::Timestamp::now().to_string());
    Condition {
        r#type: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(since),
        observed_generation: generation,
    }
}

/// A random secret, hex-encoded (never logged).
pub fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The engine container's image in a pod spec.
fn engine_image(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<String> {
    spec.containers.iter().find(|c| c.name == "engine").and_then(|c| c.image.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_that_failed_to_answer_is_taken_as_unreachable_for_a_while() {
        let t0 = Instant::now();
        let within = Duration::from_secs(10);
        let mut b = Book::default();
        assert_eq!(b.recently_unreachable("prod/malvern", t0, within), None, "never called: call it");
        b.reached("prod/malvern", false, t0);
        assert_eq!(
            b.recently_unreachable("prod/malvern", t0 + Duration::from_secs(3), within),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            b.recently_unreachable("prod/malvern", t0 + within, within),
            None,
            "too old: call it again"
        );
        assert_eq!(b.recently_unreachable("prod/ardmore", t0, within), None, "only the one that failed");
        b.reached("prod/malvern", true, t0 + Duration::from_secs(4));
        assert_eq!(
            b.recently_unreachable("prod/malvern", t0 + Duration::from_secs(5), within),
            None,
            "it answered since"
        );
        b.reached("prod/gone", false, t0);
        b.retain(|k| k != "prod/gone");
        assert_eq!(b.recently_unreachable("prod/gone", t0, within), None, "forgotten with its instance");
    }

    #[test]
    fn the_same_event_goes_out_once_a_minute_and_others_are_not_held_back() {
        let t0 = Instant::now();
        let mut e = EventLimiter::default();
        assert!(e.allow("Instance/prod/ardmore", "EngineUnreachable", t0));
        // The engine flaps: the same reason about the same object is held back for a minute …
        assert!(!e.allow("Instance/prod/ardmore", "EngineUnreachable", t0 + Duration::from_secs(5)));
        assert!(!e.allow("Instance/prod/ardmore", "EngineUnreachable", t0 + Duration::from_secs(59)));
        // … while another reason, or another object, goes out at once.
        assert!(e.allow("Instance/prod/ardmore", "RoleChanged", t0 + Duration::from_secs(5)));
        assert!(e.allow("Instance/prod/brynmawr", "EngineUnreachable", t0 + Duration::from_secs(5)));
        // A minute after it was last published it may go out again; older entries are forgotten.
        assert!(e.allow("Instance/prod/ardmore", "EngineUnreachable", t0 + Duration::from_secs(60)));
        assert_eq!(e.len(), 3);
        assert!(e.allow("Instance/prod/ardmore", "RoleChanged", t0 + Duration::from_secs(200)));
        assert_eq!(e.len(), 1, "everything older than a minute was forgotten");
    }

    #[test]
    fn a_lease_lapses_only_after_the_last_send_plus_lease_plus_call_timeout() {
        let t0 = Instant::now();
        let (lease, timeout) = (Duration::from_secs(15), Duration::from_secs(3));
        let mut book = Book::default();
        // Never seen to require a lease: no lapse proves anything, only a person's judgment.
        assert!(!book.lease_lapsed("ns/a", t0 + Duration::from_secs(60), t0, lease, timeout));
        assert!(book.presumed_gone("ns/a", t0 + Duration::from_secs(60), t0, lease, timeout));
        book.lease_required("ns/a");
        // Never sent by this replica: count from when it began to lead.
        assert!(!book.lease_lapsed("ns/a", t0 + Duration::from_secs(17), t0, lease, timeout));
        assert!(book.lease_lapsed("ns/a", t0 + Duration::from_secs(18), t0, lease, timeout));
        book.lease_sent("ns/a", t0 + Duration::from_secs(10));
        assert!(!book.lease_lapsed("ns/a", t0 + Duration::from_secs(27), t0, lease, timeout));
        assert!(book.lease_lapsed("ns/a", t0 + Duration::from_secs(28), t0, lease, timeout));
        // A send before this replica led does not count (the previous leader's may be newer).
        assert!(!book.lease_lapsed(
            "ns/a",
            t0 + Duration::from_secs(28),
            t0 + Duration::from_secs(20),
            lease,
            timeout
        ));
    }

    #[test]
    fn the_status_written_last_wins_over_a_stale_cache() {
        let mut book = Book::default();
        let written = crate::crd::FamilyStatus { revision: 7, term: 3, ..Default::default() };
        book.wrote("ns/f", &written);
        let stale = crate::crd::FamilyStatus { revision: 6, term: 2, ..Default::default() };
        assert_eq!(book.freshest("ns/f", stale).term, 3);
        let newer = crate::crd::FamilyStatus { revision: 8, term: 4, ..Default::default() };
        assert_eq!(book.freshest("ns/f", newer).term, 4);
    }

    #[test]
    fn unavailability_is_continuous() {
        let t0 = Instant::now();
        let mut book = Book::default();
        assert_eq!(book.availability("ns/a", false, t0), Duration::ZERO);
        assert_eq!(book.availability("ns/a", false, t0 + Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(book.availability("ns/a", true, t0 + Duration::from_secs(6)), Duration::ZERO);
        assert_eq!(book.availability("ns/a", false, t0 + Duration::from_secs(7)), Duration::ZERO);
        assert_eq!(book.availability("ns/a", false, t0 + Duration::from_secs(9)), Duration::from_secs(2));
        book.retain(|k| k != "ns/a");
        assert_eq!(book.availability("ns/a", false, t0 + Duration::from_secs(10)), Duration::ZERO);
    }
}
