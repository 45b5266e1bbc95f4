//! The family lifecycle against a simulated family (fake clock, fake engines that react to
//! the planned calls the way the real ones do): scenario tests for each procedure, and a
//! property test that injects crashes, freezes, restarts and requests at random and checks
//! that at no instant two engines take writes.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::crd::{Mode, ReplicationLinkSpec};
use crate::engine_status::{History, Receiver, Source};

const LEASE_MS: u64 = 15_000;
const CALL_TIMEOUT_MS: u64 = 3_000;

/// One simulated engine.
#[derive(Debug, Clone)]
struct Engine {
    status: EngineStatus,
    /// Answers the admin API (not crashed, not frozen).
    up: bool,
    /// Crashed: when it comes back it restarts (its lease is gone).
    crashed: bool,
    lease_until: Option<u64>,
    /// The journal: the term each transaction was committed at (tells A97 from A97a).
    log: Vec<u64>,
    /// The image its Instance asks for, its StatefulSet runs, its pod runs ("vN": a binary
    /// that writes format N and reads format N-1 in version-mismatch mode).
    spec_image: String,
    set_image: String,
    pod_image: String,
    /// Its pod restarts onto the StatefulSet's image (down for a tick).
    restarting: bool,
    /// How many times its pod restarted onto a new image.
    restarts: u32,
}

fn format_of(image: &str) -> u32 {
    image.trim_start_matches('v').parse().unwrap()
}

impl Engine {
    fn new(name: &str) -> Self {
        Engine {
            status: EngineStatus {
                name: name.into(),
                role: "standalone".into(),
                history: vec![History { start_seqno: 1, root_name: name.into() }],
                repl_addr: Some(format!("{name}:7070")),
                format_version: 1,
                binary_format_version: 1,
                features: vec!["seed".into()],
                ..Default::default()
            },
            up: true,
            crashed: false,
            lease_until: None,
            log: Vec::new(),
            spec_image: "v1".into(),
            set_image: "v1".into(),
            pod_image: "v1".into(),
            restarting: false,
            restarts: 0,
        }
    }

    /// Takes application writes now.
    fn takes_writes(&self, now: u64) -> bool {
        self.up
            && self.status.writable_role()
            && self.status.version_mismatch.is_none()
            && (!self.status.lease.required || self.lease_until.is_some_and(|u| now < u))
    }
}

/// A family of simulated engines driven by the planner on a fake clock.
struct Sim {
    engines: BTreeMap<String, Engine>,
    links: Vec<(String, ReplicationLinkSpec, bool)>,
    status: FamilyStatus,
    requests: BTreeMap<String, Requests>,
    timing: Timing,
    now: u64,
    /// Operator bookkeeping (as the controller's Book): last lease send, unavailability.
    lease_sent: BTreeMap<String, u64>,
    unavailable_since: Option<(String, u64)>,
    operator_started: u64,
    /// Acknowledged writes: (engine, seqno, term).
    acked: Vec<(String, u64, u64)>,
    rolled_off: u64,
    /// Every transaction rolled off into an unreplicated-transaction log: (seqno, term).
    lost_log: Vec<(u64, u64)>,
    lease_required_seen: std::collections::BTreeSet<String>,
    /// The members' primaryUpdateStrategy/Method.
    supervised: bool,
    restart: bool,
    /// Per SI link: its target family's primary, as the planner sees it (never acted on here).
    si_targets: BTreeMap<String, EngineStatus>,
}

fn spec(source: &str, target: &str, autorollback: bool) -> ReplicationLinkSpec {
    ReplicationLinkSpec {
        source: source.into(),
        target: target.into(),
        mode: Mode::Bc,
        autorollback,
        noresync: false,
        updateresync: None,
        paused: false,
    }
}

impl Sim {
    fn new(names: &[&str], links: &[(&str, &str)]) -> Self {
        Sim {
            engines: names.iter().map(|n| ((*n).to_owned(), Engine::new(n))).collect(),
            links: links.iter().map(|(s, t)| (format!("{s}-to-{t}"), spec(s, t, true), false)).collect(),
            status: FamilyStatus::default(),
            requests: BTreeMap::new(),
            timing: Timing {
                failover_delay: Duration::from_secs(10),
                fence_deadline: Duration::from_secs(10),
                catch_up_deadline: Duration::from_secs(10),
                repoint_deadline: Duration::from_secs(20),
                upgrade_step_deadline: Duration::from_secs(30),
            },
            now: 0,
            lease_sent: BTreeMap::new(),
            unavailable_since: None,
            operator_started: 0,
            acked: Vec::new(),
            rolled_off: 0,
            lost_log: Vec::new(),
            lease_required_seen: Default::default(),
            supervised: false,
            restart: false,
            si_targets: BTreeMap::new(),
        }
    }

    fn stamp(&self) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + self.now as i64).unwrap()
    }

    fn plan(&mut self) -> FamilyPlan {
        // The controller's bookkeeping.
        let primary = self.status.primary.clone();
        let (down, lapsed, gone) = match &primary {
            Some(p) => {
                let e = &self.engines[p];
                let available = e.up && e.status.writable_role() && e.status.term >= self.status.term;
                let down = if available {
                    self.unavailable_since = None;
                    0
                } else {
                    match &self.unavailable_since {
                        Some((who, since)) if who == p => self.now - since,
                        _ => {
                            self.unavailable_since = Some((p.clone(), self.now));
                            0
                        }
                    }
                };
                let from = self
                    .lease_sent
                    .get(p)
                    .copied()
                    .unwrap_or(self.operator_started)
                    .max(self.operator_started);
                let timing = self.now >= from + LEASE_MS + CALL_TIMEOUT_MS;
                // As the controller's book: a lapse proves something only for an engine seen
                // to require a lease (its status said so while it answered, or a grant did).
                if e.up && e.status.lease.required {
                    self.lease_required_seen.insert(p.clone());
                }
                (down, timing && self.lease_required_seen.contains(p), timing)
            }
            None => (0, true, true),
        };
        let snapshot: Vec<(String, Option<EngineStatus>)> =
            self.engines.iter().map(|(n, e)| (n.clone(), e.up.then(|| e.status.clone()))).collect();
        let engines = self.engines.clone();
        let addrs: BTreeMap<String, String> =
            self.engines.keys().map(|n| (n.clone(), format!("{n}:7070"))).collect();
        let members: Vec<MemberView<'_>> = snapshot
            .iter()
            .map(|(n, e)| MemberView {
                name: n,
                paused: false,
                repl_addr: Some(&addrs[n]),
                engine: e.as_ref(),
                last_term: Some(self.engines[n].status.term),
                lease_over: self.now
                    >= self
                        .lease_sent
                        .get(n)
                        .copied()
                        .unwrap_or(self.operator_started)
                        .max(self.operator_started)
                        + LEASE_MS
                        + CALL_TIMEOUT_MS,
                spec_image: &engines[n].spec_image,
                set_image: Some(&engines[n].set_image),
                // A pod's image shows once it is ready (up).
                pod_image: e.as_ref().map(|_| engines[n].pod_image.as_str()),
                supervised: self.supervised,
                restart: self.restart,
                requests: self.requests.get(n).cloned().unwrap_or_default(),
            })
            .collect();
        let links: Vec<LinkView<'_>> = self
            .links
            .iter()
            .map(|(name, spec, deleting)| LinkView {
                name,
                spec,
                deleting: *deleting,
                blocked: None,
                owned: true,
            })
            .collect();
        let status = self.status.clone();
        let si_addrs: BTreeMap<&str, String> =
            self.si_targets.iter().map(|(l, e)| (l.as_str(), format!("{}:7070", e.name))).collect();
        let si_peers = self
            .si_targets
            .iter()
            .map(|(l, e)| {
                let peer = SiPeer { name: &e.name, repl_addr: Some(&si_addrs[l.as_str()]), engine: Some(e) };
                (l.clone(), peer)
            })
            .collect();
        let view = FamilyView {
            name: "fam",
            members,
            links,
            si_peers,
            status: &status,
            now: self.stamp(),
            primary_unavailable_for: Duration::from_millis(down),
            primary_lease_lapsed: lapsed,
            primary_presumed_gone: gone,
            timing: &self.timing,
        };
        let plan = plan(&view);
        check_plan(&view, &plan);
        plan
    }

    /// Persists the plan's status, then carries out its actions in order (stopping at the
    /// first that fails, as the controller does).
    fn step(&mut self) -> FamilyPlan {
        let plan = self.plan();
        if std::env::var("SIM_TRACE").is_ok() && !plan.actions.is_empty() {
            eprintln!(
                "{} ms: {:?} | {:?}",
                self.now,
                plan.actions,
                plan.status.procedure.as_ref().map(|p| (&p.step, &p.to, p.term))
            );
        }
        self.status = plan.status.clone();
        for a in &plan.actions {
            if !self.apply(a) {
                break;
            }
        }
        if plan.actions.iter().all(|a| self.engines[a.instance()].up) {
            for h in &plan.handled_after {
                self.status.handled.push(h.clone());
            }
        }
        plan
    }

    /// The engine's side of one admin call; false when it failed.
    fn apply(&mut self, a: &Action) -> bool {
        let now = self.now;
        if let Action::Lease { instance, .. } = a {
            // Counted from the send, delivered or not (the controller's book).
            self.lease_sent.insert(instance.clone(), now);
        }
        let e = self.engines.get_mut(a.instance()).unwrap();
        if !e.up {
            return false;
        }
        let before = (e.status.role.clone(), e.status.term);
        let ok = Self::apply_to(e, a, now);
        // As the engine: a lease is for one role at one term.
        if (e.status.role.clone(), e.status.term) != before {
            e.lease_until = None;
        }
        if ok && matches!(a, Action::Lease { .. }) {
            e.lease_until = Some(now + LEASE_MS);
            self.lease_required_seen.insert(a.instance().to_owned());
        }
        ok
    }

    fn apply_to(e: &mut Engine, a: &Action, now: u64) -> bool {
        // A primary that requires a lease writes (journaled calls too) only while it holds one.
        let leased = !e.status.lease.required || e.lease_until.is_some_and(|u| now < u);
        let s = &mut e.status;
        match a {
            Action::Promote { term, lease, .. } => {
                if s.writable_role() && *term == s.term {
                    s.lease.required = *lease;
                    return true;
                }
                if *term <= s.term {
                    return false;
                }
                s.term = *term;
                s.role = "primary".into();
                s.receiver = None;
                s.lease.required = *lease;
                s.history.push(History { start_seqno: s.journal_seqno + 1, root_name: s.name.clone() });
            }
            Action::Lease { term, .. } => {
                if !s.writable_role() || s.term != *term {
                    return false;
                }
                s.lease.required = true;
            }
            Action::Fence { term, .. } => {
                if !s.writable_role() {
                    return false;
                }
                s.term = s.term.max(*term);
                s.role = "secondary".into();
                e.log.push(s.term); // the failover record
                s.journal_seqno = e.log.len() as u64;
            }
            Action::Demote { term, .. } => {
                s.term = s.term.max(*term);
                s.role = "secondary".into();
            }
            Action::ReceiverStart { autorollback, seed, term, .. } => {
                if s.writable_role() {
                    return false;
                }
                s.role = "secondary".into();
                s.receiver = Some(Receiver {
                    autorollback: *autorollback,
                    seed: *seed,
                    state: "idle".into(),
                    ..Default::default()
                });
                if let Some(t) = term {
                    s.term = s.term.max(*t);
                }
            }
            Action::ReceiverStop { .. } => s.receiver = None,
            Action::SourceStart { receiver, addr, .. } => {
                s.sources.retain(|x| &x.receiver != receiver);
                s.sources.push(Source {
                    receiver: receiver.clone(),
                    addr: addr.clone(),
                    state: "connecting".into(),
                    ..Default::default()
                });
            }
            Action::SourceStop { receiver, .. } => s.sources.retain(|x| &x.receiver != receiver),
            Action::Rollback { .. } => {}
            Action::PrepareUpgrade { .. } => {
                if (!s.writable_role() && s.role != "standalone") || !leased {
                    return false;
                }
                s.upgrade_prepared = true;
                e.log.push(s.term); // a journaled write
                s.journal_seqno = e.log.len() as u64;
            }
            Action::UpgradeFormat { .. } => {
                if (!s.writable_role() && s.role != "standalone") || !leased {
                    return false;
                }
                if s.format_version < s.binary_format_version {
                    s.format_version = s.binary_format_version;
                    s.version_mismatch = None;
                    e.log.push(s.term); // the upgrade record
                    s.journal_seqno = e.log.len() as u64;
                }
            }
        }
        true
    }

    /// The Instance controller and the pods: each StatefulSet gets the image the family's
    /// upgrade allows; a pod whose image differs restarts onto it (down for one tick), in
    /// version-mismatch mode when its binary writes a newer format than its data has.
    fn roll(&mut self) {
        let upgrade = self.status.upgrade.clone();
        for (name, e) in self.engines.iter_mut() {
            e.set_image = image_for(name, &e.spec_image, upgrade.as_ref(), Some(&e.set_image), None);
            if e.restarting {
                e.restarting = false;
                e.up = true;
                e.crashed = false;
                e.lease_until = None;
                e.pod_image = e.set_image.clone();
                e.restarts += 1;
                let binary = format_of(&e.pod_image);
                // A binary opens its own format and the one before (version-mismatch mode).
                assert!(
                    binary == e.status.format_version || binary == e.status.format_version + 1,
                    "{name} started on {} with format-{} data it cannot open",
                    e.pod_image,
                    e.status.format_version
                );
                e.status.binary_format_version = binary;
                e.status.version_mismatch =
                    (binary > e.status.format_version).then(|| "version mismatch".to_owned());
                if let Some(r) = e.status.receiver.as_mut() {
                    r.state = "idle".into();
                }
            } else if e.pod_image != e.set_image && e.up {
                e.up = false;
                e.restarting = true;
            }
        }
    }

    fn restarting(&self) -> usize {
        self.engines.values().filter(|e| e.restarting).count()
    }

    fn set_spec_image(&mut self, image: &str) {
        for e in self.engines.values_mut() {
            e.spec_image = image.into();
        }
    }

    /// Every member runs `image` with its data in that image's format.
    fn all_on(&self, image: &str) -> bool {
        self.engines.values().all(|e| {
            e.up && e.pod_image == image
                && e.status.format_version == format_of(image)
                && e.status.version_mismatch.is_none()
        })
    }

    /// Replication: every up source streams to its receiver by the engines' rules.
    fn replicate(&mut self) {
        let names: Vec<String> = self.engines.keys().cloned().collect();
        for src in &names {
            let sources = self.engines[src].status.sources.clone();
            for out in sources {
                let (Some(from), Some(to)) =
                    (self.engines.get(src).cloned(), self.engines.get(&out.receiver).cloned())
                else {
                    continue;
                };
                let state = if !from.up || !to.up {
                    "connecting"
                } else if to.status.receiver.is_none() || to.status.writable_role() {
                    "error"
                } else if from.status.term < to.status.term {
                    // Refused as stale: the source steps down.
                    let f = self.engines.get_mut(src).unwrap();
                    f.status.term = to.status.term;
                    if f.status.writable_role() {
                        f.status.role = "secondary".into();
                    }
                    "error"
                } else if from.status.format_version > to.status.binary_format_version {
                    // The upgrade record: a binary that cannot write the format refuses it.
                    "error"
                } else {
                    // The latest common transaction, then: ahead → roll back or refuse.
                    let common = to.log.iter().zip(&from.log).take_while(|(a, b)| a == b).count();
                    let ahead = to.log.len() > common;
                    let autorollback = to.status.receiver.as_ref().is_some_and(|r| r.autorollback);
                    let t = self.engines.get_mut(&out.receiver).unwrap();
                    if ahead && !autorollback {
                        t.status.receiver.as_mut().unwrap().state = "rollback_required".into();
                        "rollback_required"
                    } else {
                        if ahead {
                            self.rolled_off += (t.log.len() - common) as u64;
                            for (i, term) in t.log.iter().enumerate().skip(common) {
                                self.lost_log.push((i as u64 + 1, *term));
                            }
                        }
                        t.log = from.log.clone();
                        t.status.journal_seqno = t.log.len() as u64;
                        t.status.term = t.status.term.max(from.status.term);
                        t.status.history = from.status.history.clone();
                        t.status.format_version = from.status.format_version;
                        t.status.upgrade_prepared = from.status.upgrade_prepared;
                        t.status.version_mismatch = (t.status.binary_format_version
                            > t.status.format_version)
                            .then(|| "version mismatch".to_owned());
                        t.status.receiver.as_mut().unwrap().state = "streaming".into();
                        "streaming"
                    }
                };
                let f = self.engines.get_mut(src).unwrap();
                if let Some(s) = f.status.sources.iter_mut().find(|s| s.receiver == out.receiver) {
                    s.state = state.into();
                    s.backlog = 0;
                }
            }
        }
    }

    /// A client writes to whoever takes writes.
    fn write(&mut self) {
        let now = self.now;
        let writers: Vec<String> =
            self.engines.iter().filter(|(_, e)| e.takes_writes(now)).map(|(n, _)| n.clone()).collect();
        assert!(writers.len() <= 1, "two engines take writes at {now} ms: {writers:?}");
        if let Some(w) = writers.first() {
            let e = self.engines.get_mut(w).unwrap();
            e.log.push(e.status.term);
            e.status.journal_seqno = e.log.len() as u64;
            self.acked.push((w.clone(), e.status.journal_seqno, e.status.term));
        }
    }

    fn tick(&mut self, ms: u64) -> FamilyPlan {
        let plan = self.step();
        self.roll();
        self.replicate();
        self.write();
        self.now += ms;
        for e in self.engines.values_mut() {
            if e.status.lease.required {
                e.status.lease.remaining_ms = e.lease_until.map(|u| u.saturating_sub(self.now));
            }
        }
        plan
    }

    fn run(&mut self, ms: u64, until: impl Fn(&Sim) -> bool) -> bool {
        let end = self.now + ms;
        while self.now < end {
            self.tick(500);
            if until(self) {
                return true;
            }
        }
        false
    }

    fn crash(&mut self, name: &str) {
        let e = self.engines.get_mut(name).unwrap();
        e.up = false;
        e.crashed = true;
    }

    fn freeze(&mut self, name: &str) {
        self.engines.get_mut(name).unwrap().up = false;
    }

    fn back(&mut self, name: &str) {
        let e = self.engines.get_mut(name).unwrap();
        e.up = true;
        if e.crashed {
            e.crashed = false;
            e.lease_until = None;
        }
    }

    fn role(&self, name: &str) -> &str {
        &self.engines[name].status.role
    }

    fn healthy(&self) -> bool {
        self.status.phase.as_deref() == Some("Healthy")
    }
}

/// The safety rules of the module documentation, checked on every plan.
fn check_plan(view: &FamilyView<'_>, plan: &FamilyPlan) {
    let promotions: Vec<(&String, u64)> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Promote { instance, term, lease: true } => Some((instance, *term)),
            _ => None,
        })
        .collect();
    let observed_max = view.members.iter().filter_map(|m| m.engine).map(|e| e.term).max().unwrap_or(0);
    let new_writers: Vec<&(&String, u64)> = promotions
        .iter()
        .filter(|(i, _)| {
            view.members
                .iter()
                .find(|m| m.name == i.as_str())
                .and_then(|m| m.engine)
                .is_none_or(|e| !e.writable_role())
        })
        .collect();
    assert!(new_writers.len() <= 1, "two promotions in one step: {promotions:?}");
    for (instance, term) in new_writers {
        assert!(*term > observed_max, "promotion of {instance} at term {term}, not above {observed_max}");
        for m in &view.members {
            if m.name != instance.as_str() {
                assert!(
                    m.engine.is_none_or(|e| !e.writable_role()),
                    "{instance} promoted while {} is observed writable",
                    m.name
                );
            }
        }
        let old = view.status.primary.as_deref();
        if let Some(old) = old.filter(|o| *o != instance.as_str()) {
            let fenced = view
                .members
                .iter()
                .find(|m| m.name == old)
                .and_then(|m| m.engine)
                .is_some_and(|e| !e.writable_role());
            // A forced failover may go on a person's word once a lease's worth of time passed.
            let forced = plan.status.procedure.as_ref().is_some_and(|p| p.forced);
            // A target the operator itself promoted (with a lease) whose grants have all run out.
            let over = view.members.iter().find(|m| m.name == old).is_some_and(|m| m.lease_over)
                && view
                    .status
                    .procedure
                    .as_ref()
                    .is_some_and(|p| p.to.is_none() || p.to.as_deref() != Some(old));
            // Seen fenced earlier in this procedure, and not promoted since (it was not the target).
            let fenced_earlier = view.status.procedure.as_ref().is_some_and(|p| {
                p.from.as_deref() == Some(old) && p.fenced_seqno.is_some() && p.to.as_deref() != Some(old)
            });
            assert!(
                fenced
                    || view.primary_lease_lapsed
                    || (forced && view.primary_presumed_gone)
                    || over
                    || fenced_earlier,
                "{instance} promoted while {old} may still hold its lease: before {:?} after {:?} lapsed {} gone {}",
                view.status.procedure,
                plan.status.procedure,
                view.primary_lease_lapsed,
                view.primary_presumed_gone
            );
        }
    }
    for a in &plan.actions {
        if let Action::Lease { instance, term } = a {
            assert_eq!(plan.status.primary.as_deref(), Some(instance.as_str()), "lease for a non-primary");
            assert_eq!(*term, plan.status.term, "lease at another term");
        }
    }
}

#[test]
fn a_new_pair_founds_the_family_and_streams() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    let plan = sim.tick(500);
    assert_eq!(
        plan.actions[..2],
        [
            Action::Promote { instance: "ardmore".into(), term: 1, lease: true },
            Action::Lease { instance: "ardmore".into(), term: 1 }
        ]
    );
    assert!(sim.run(10_000, Sim::healthy), "{:?}", sim.status);
    assert_eq!((sim.role("ardmore"), sim.role("brynmawr")), ("primary", "secondary"));
    let link = &sim.tick(500).links["ardmore-to-brynmawr"];
    assert_eq!((link.current_source.as_deref(), link.state.as_str()), (Some("ardmore"), "Streaming"));
    // At rest: only the lease.
    let plan = sim.tick(500);
    assert_eq!(plan.actions, [Action::Lease { instance: "ardmore".into(), term: 1 }]);
    assert!(!plan.busy);
}

/// A BC receiver is started with seeding allowed where its binary can be seeded, and without
/// where it cannot (an older binary refuses the field): neither is started again and again.
#[test]
fn receivers_are_seeded_where_their_binary_can_be() {
    for can in [true, false] {
        let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
        if !can {
            sim.engines.get_mut("brynmawr").unwrap().status.features.clear();
        }
        assert!(sim.run(10_000, Sim::healthy), "{:?}", sim.status);
        let receiver = sim.engines["brynmawr"].status.receiver.clone().unwrap();
        assert_eq!(receiver.seed, can);
        let plan = sim.tick(500);
        assert_eq!(plan.actions, [Action::Lease { instance: "ardmore".into(), term: 1 }], "at rest");
    }
}

/// A supplementary target without the family's stream joins it: from the backup
/// `spec.updateresync` names; while the source holds nothing, from its history; otherwise from
/// the source's snapshot where both binaries can seed (its receiver started once with `seed`,
/// not again while the snapshot is on its way). Blocked, saying why, where neither works: an
/// older binary on either end, or a target holding data of its own.
#[test]
fn an_si_target_joins_from_a_snapshot_where_its_binary_can_be() {
    type Started = Option<(bool, Option<&'static str>, Option<&'static str>)>;
    type Case = ((bool, bool), Option<&'static str>, u64, u64, (Started, &'static str));
    let blocked_by = |why: &'static str| (None, why);
    let cases: [Case; 7] = [
        // ((target, source) list seed-si, spec.updateresync, source seqno, target's own seqno)
        ((true, true), None, 40, 0, (Some((true, None, None)), "")),
        ((true, true), Some("/backup"), 40, 0, (Some((false, Some("/backup"), None)), "")),
        ((true, true), None, 0, 0, (Some((false, None, Some("ardmore:7070"))), "")),
        ((false, false), None, 0, 0, (Some((false, None, Some("ardmore:7070"))), "")),
        ((false, true), None, 40, 0, blocked_by("cannot seed an SI stream from a snapshot")),
        ((true, false), None, 40, 0, blocked_by("cannot seed an SI stream from a snapshot")),
        ((true, true), None, 40, 3, blocked_by("holds data of its own")),
    ];
    for ((target_can, source_can), updateresync, seqno, own, (expected, why)) in cases {
        let case = format!(
            "seed-si {target_can}/{source_can}, updateresync {updateresync:?}, seqno {seqno}, own {own}"
        );
        let mut sim = Sim::new(&["ardmore"], &[]);
        let link = ReplicationLinkSpec {
            mode: Mode::Si,
            updateresync: updateresync.map(str::to_owned),
            ..spec("ardmore", "malvern", true)
        };
        sim.links.push(("ardmore-to-malvern".into(), link, false));
        // Malvern not yet its family's primary: nothing is asked of it meanwhile.
        let mut malvern = Engine::new("malvern").status;
        sim.si_targets.insert("ardmore-to-malvern".into(), malvern.clone());
        assert!(sim.run(10_000, |s| s.status.primary.as_deref() == Some("ardmore")), "{:?}", sim.status);
        let ardmore = &mut sim.engines.get_mut("ardmore").unwrap().status;
        ardmore.journal_seqno = seqno;
        if source_can {
            ardmore.features.push("seed-si".into());
        }
        malvern.role = "supplementary-primary".into();
        malvern.streams = vec![crate::engine_status::Stream { stream: 0, source_family: None, seqno: own }];
        if target_can {
            malvern.features.push("seed-si".into());
        }
        sim.si_targets.insert("ardmore-to-malvern".into(), malvern.clone());
        let plan = sim.plan();
        let started =
            plan.actions.iter().find_map(|a| match a {
                Action::ReceiverStart {
                    instance, si: true, seed, updateresync, updateresync_from, ..
                } if instance == "malvern" => Some((*seed, updateresync.clone(), updateresync_from.clone())),
                _ => None,
            });
        let expected = expected.map(|(seed, u, f)| (seed, u.map(str::to_owned), f.map(str::to_owned)));
        assert_eq!(started, expected, "{case}");
        let report = &plan.links["ardmore-to-malvern"];
        if expected.is_none() {
            assert_eq!(report.state, "Blocked", "{case}");
            let reason = report.reason.as_deref().unwrap_or_default();
            assert!(reason.contains(why) && reason.contains("spec.updateresync"), "{case}: {reason}");
            continue;
        }
        // The receiver as started; a snapshot still on its way: nothing started again.
        if expected.as_ref().is_some_and(|e| e.0) {
            malvern.receiver = Some(Receiver {
                si: true,
                autorollback: true,
                seed: true,
                state: "seeding".into(),
                ..Default::default()
            });
            sim.si_targets.insert("ardmore-to-malvern".into(), malvern.clone());
            let plan = sim.plan();
            assert!(
                !plan.actions.iter().any(|a| matches!(a, Action::ReceiverStart { .. })),
                "{case}: {:?}",
                plan.actions
            );
            // Seeded: the stream is there, and the receiver is left as it is.
            malvern.streams.push(crate::engine_status::Stream {
                stream: 1,
                source_family: Some("ardmore".into()),
                seqno,
            });
            sim.si_targets.insert("ardmore-to-malvern".into(), malvern);
            let plan = sim.plan();
            assert!(
                !plan.actions.iter().any(|a| matches!(a, Action::ReceiverStart { .. })),
                "{case}: {:?}",
                plan.actions
            );
        }
    }
}

#[test]
fn a_switchover_fences_waits_promotes_and_repoints_without_losing_a_write() {
    let mut sim =
        Sim::new(&["ardmore", "brynmawr", "oxford"], &[("ardmore", "brynmawr"), ("brynmawr", "oxford")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.requests.insert("oxford".into(), Requests { switchover: Some("r1".into()), ..Default::default() });
    let plan = sim.tick(500);
    assert_eq!(plan.status.procedure.as_ref().map(|p| p.step.as_str()), Some(FENCING));
    assert!(plan.actions.contains(&Action::Fence { instance: "ardmore".into(), term: 1 }));
    assert!(sim.run(30_000, |s| s.status.procedure.is_none()), "{:?}", sim.status);
    let record = sim.status.history.last().unwrap();
    assert_eq!(
        (record.outcome.as_str(), record.to.as_deref(), record.term),
        ("Succeeded", Some("oxford"), 2),
        "{record:?}"
    );
    let steps: Vec<&str> = record.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, [FENCING, CATCHING_UP, PROMOTING, REPOINTING, "Done"]);
    assert!(sim.run(10_000, Sim::healthy));
    assert_eq!(
        (sim.role("oxford"), sim.role("brynmawr"), sim.role("ardmore")),
        ("primary", "secondary", "secondary")
    );
    // The tree is re-rooted: oxford → brynmawr → ardmore.
    let plan = sim.tick(500);
    assert_eq!(plan.links["brynmawr-to-oxford"].current_source.as_deref(), Some("oxford"));
    assert_eq!(plan.links["ardmore-to-brynmawr"].current_source.as_deref(), Some("brynmawr"));
    // Every acknowledged write is on the new primary; nothing was rolled off.
    let top = sim.engines["oxford"].status.journal_seqno;
    assert!(sim.acked.iter().all(|(_, seqno, _)| *seqno <= top));
    assert_eq!(sim.rolled_off, 0);
    // The request is handled once: keeping the annotation does nothing more.
    assert!(sim.run(5_000, |_| false) || sim.status.procedure.is_none());
    assert_eq!(sim.status.primary.as_deref(), Some("oxford"));
}

#[test]
fn a_switchover_whose_target_does_not_catch_up_aborts_back_to_the_old_primary() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.requests.insert("brynmawr".into(), Requests { switchover: Some("r1".into()), ..Default::default() });
    sim.tick(500); // fencing planned and done
    sim.freeze("brynmawr"); // it will never apply the failover record
    assert!(sim.run(30_000, |s| s.status.procedure.is_none()));
    let record = sim.status.history.last().unwrap();
    assert_eq!(record.outcome, "Aborted");
    assert_eq!(sim.status.primary.as_deref(), Some("ardmore"));
    assert_eq!(sim.status.term, 3, "the abort skips the term the target might still get");
    assert_eq!(sim.role("ardmore"), "primary");
    sim.back("brynmawr");
    assert!(sim.run(10_000, Sim::healthy));
}

#[test]
fn a_dead_primary_is_replaced_after_the_delay_and_its_lease_and_rejoins_with_rollback() {
    let mut sim =
        Sim::new(&["ardmore", "brynmawr", "newtown"], &[("ardmore", "brynmawr"), ("ardmore", "newtown")]);
    assert!(sim.run(10_000, Sim::healthy));
    // Brynmawr stops receiving; Ardmore commits what only it has, then dies.
    sim.freeze("brynmawr");
    sim.run(2_000, |_| false);
    sim.back("brynmawr");
    sim.links.iter_mut().for_each(|l| l.1.paused = l.1.target == "brynmawr");
    sim.run(2_000, |_| false);
    sim.crash("ardmore");
    let crashed_at = sim.now;
    // A restart within the delay is no failover.
    sim.run(4_000, |_| false);
    assert!(sim.status.procedure.is_none());
    assert!(sim.run(60_000, |s| s.status.primary.as_deref() != Some("ardmore")), "{:?}", sim.status);
    let waited = sim.now - crashed_at;
    assert!(waited >= LEASE_MS, "promoted after {waited} ms, before the lease could have lapsed");
    assert_eq!(sim.status.primary.as_deref(), Some("newtown"), "the most advanced member");
    sim.links.iter_mut().for_each(|l| l.1.paused = false);
    // Brynmawr's way to the new primary went through the dead hub: it streams from Newtown
    // directly meanwhile.
    assert!(
        sim.run(20_000, |s| {
            let (b, n) = (&s.engines["brynmawr"].status, &s.engines["newtown"].status);
            s.status.procedure.is_none()
                && n.journal_seqno - b.journal_seqno <= 1
                && n.source_to("brynmawr").is_some_and(|x| x.state == "streaming")
        }),
        "{:?}",
        sim.status
    );
    assert_eq!(sim.status.phase.as_deref(), Some("Degraded"), "Ardmore is still down");
    // Ardmore comes back believing it is primary: it takes no writes (no lease), is demoted
    // and rolls off what the family does not have.
    sim.back("ardmore");
    assert!(!sim.engines["ardmore"].takes_writes(sim.now));
    assert!(sim.run(20_000, |s| s.role("ardmore") == "secondary" && s.healthy()), "{:?}", sim.status);
    assert!(sim.rolled_off > 0);
    assert_eq!(sim.status.history.last().map(|r| r.kind.as_str()), Some(FAILOVER));
}

#[test]
fn a_frozen_primary_thawed_after_the_failover_takes_no_writes_and_rejoins() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.freeze("ardmore");
    assert!(
        sim.run(60_000, |s| s.status.primary.as_deref() == Some("brynmawr") && s.status.procedure.is_none())
    );
    sim.back("ardmore");
    assert!(!sim.engines["ardmore"].takes_writes(sim.now), "its lease ran out while frozen");
    assert!(sim.run(20_000, |s| s.role("ardmore") == "secondary" && s.healthy()));
}

#[test]
fn a_drain_of_the_primary_switches_over_to_the_most_advanced_secondary() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.requests.insert("ardmore".into(), Requests { drain: Some("pod-uid".into()), ..Default::default() });
    assert!(
        sim.run(30_000, |s| s.status.primary.as_deref() == Some("brynmawr") && s.status.procedure.is_none())
    );
    assert_eq!(sim.status.history.last().unwrap().outcome, "Succeeded");
    // Handled once, even though the annotation stays.
    assert!(sim.run(10_000, Sim::healthy));
    assert_eq!(sim.status.primary.as_deref(), Some("brynmawr"));
}

#[test]
fn a_drain_of_a_lone_primary_says_there_is_no_secondary_and_moves_nothing() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.freeze("brynmawr");
    sim.requests.insert("ardmore".into(), Requests { drain: Some("pod-uid".into()), ..Default::default() });
    let plan = sim.tick(500);
    assert!(plan.notes.iter().any(|n| n.reason == "NoSecondary" && n.warning));
    assert!(sim.status.procedure.is_none());
    // Once the secondary is back the drain goes on.
    sim.back("brynmawr");
    assert!(
        sim.run(30_000, |s| s.status.primary.as_deref() == Some("brynmawr") && s.status.procedure.is_none())
    );
}

#[test]
fn a_new_family_object_with_a_member_down_waits_and_then_follows_the_primary() {
    let mut sim =
        Sim::new(&["ardmore", "brynmawr", "oxford"], &[("ardmore", "brynmawr"), ("brynmawr", "oxford")]);
    assert!(sim.run(10_000, Sim::healthy));
    // The Family object is re-created (a rename) while the primary does not answer: no
    // member may be founded a primary — the silent one may still be one.
    sim.freeze("ardmore");
    sim.status = FamilyStatus::default();
    sim.run(20_000, |_| false);
    assert_eq!(sim.role("brynmawr"), "secondary");
    assert_eq!(sim.role("oxford"), "secondary");
    assert_eq!(sim.status.phase.as_deref(), Some("Pending"));
    // It answers again: the family follows it.
    sim.back("ardmore");
    assert!(sim.run(10_000, Sim::healthy));
    assert_eq!(sim.status.primary.as_deref(), Some("ardmore"));
}

#[test]
fn a_forced_failover_fences_a_live_primary_without_waiting() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.requests.insert("brynmawr".into(), Requests { failover: Some("f1".into()), ..Default::default() });
    let started = sim.now;
    assert!(sim.run(10_000, |s| s.status.primary.as_deref() == Some("brynmawr")));
    assert!(sim.now - started < 5_000);
    assert!(sim.run(20_000, |s| s.healthy() && s.role("ardmore") == "secondary"));
}

#[test]
fn a_deleted_link_is_released_only_once_its_stream_is_observed_stopped() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.links[0].2 = true;
    sim.freeze("ardmore");
    let plan = sim.tick(500);
    assert!(plan.release.is_empty(), "released with ardmore unreachable");
    assert!(plan.links["ardmore-to-brynmawr"].reason.as_deref().unwrap_or("").contains("does not answer"));
    sim.back("ardmore");
    let plan = sim.tick(500);
    assert!(
        plan.actions
            .contains(&Action::SourceStop { instance: "ardmore".into(), receiver: "brynmawr".into() })
    );
    assert!(plan.release.is_empty());
    let mut released = false;
    for _ in 0..5 {
        released |= sim.tick(500).release.contains(&"ardmore-to-brynmawr".to_owned());
    }
    assert!(released);
    assert!(sim.engines["brynmawr"].status.receiver.is_none());
}

/// Runs `sim` until its upgrade is over, tracking that at most one pod restarted at a time
/// and that the primary's pod restarted only after every secondary ran the new image.
fn run_upgrade(sim: &mut Sim, ms: u64) -> bool {
    let end = sim.now + ms;
    let mut started = false;
    while sim.now < end {
        sim.tick(500);
        assert!(sim.restarting() <= 1, "two pods restart at once at {} ms", sim.now);
        started |= sim.status.upgrade.is_some();
        if started && sim.status.upgrade.is_none() && sim.status.procedure.is_none() {
            return true;
        }
    }
    false
}

#[test]
fn an_image_change_rolls_the_secondaries_switches_over_and_upgrades_the_format() {
    let mut sim =
        Sim::new(&["ardmore", "brynmawr", "oxford"], &[("ardmore", "brynmawr"), ("brynmawr", "oxford")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.set_spec_image("v2");
    let plan = sim.tick(500);
    assert!(plan.notes.iter().any(|n| n.reason == "UpgradeStarted"));
    assert_eq!(
        plan.actions.last(),
        Some(&Action::PrepareUpgrade { instance: "ardmore".into() }),
        "after the lease"
    );
    // The secondaries go first; the old primary keeps its image until it is one no more.
    let mut secondaries_first = true;
    let end = sim.now + 120_000;
    while sim.now < end && sim.status.upgrade.is_some() {
        sim.tick(500);
        assert!(sim.restarting() <= 1, "two pods restart at once at {} ms", sim.now);
        if sim.engines["ardmore"].set_image == "v2" {
            secondaries_first &= ["brynmawr", "oxford"].iter().all(|n| sim.engines[*n].pod_image == "v2");
            secondaries_first &= sim.status.primary.as_deref() != Some("ardmore");
        }
    }
    assert!(sim.status.upgrade.is_none(), "{:?}", sim.status);
    assert!(secondaries_first, "the primary's pod was released before the secondaries ran v2");
    assert!(sim.run(20_000, |s| s.healthy() && s.all_on("v2")), "{:?}", sim.status);
    let kinds: Vec<(&str, &str)> =
        sim.status.history.iter().map(|r| (r.kind.as_str(), r.outcome.as_str())).collect();
    assert_eq!(kinds, [(SWITCHOVER, "Succeeded"), ("Upgrade", "Succeeded")]);
    // Re-pointing did not wait for the old primary, whose binary cannot apply the upgrade
    // record until its turn.
    assert_eq!(sim.status.history[0].message, None, "{:?}", sim.status.history[0]);
    let record = sim.status.history.last().unwrap();
    assert_eq!((record.from.as_deref(), record.to.as_deref()), (Some("v1"), Some("v2")));
    let steps: Vec<&str> = record.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps.first(), Some(&UP_PREPARING));
    assert!(steps.contains(&UP_FORMAT) && steps.contains(&UP_FINISHING), "{steps:?}");
    // Each member restarted once; nothing acknowledged was lost or rolled off.
    assert!(sim.engines.values().all(|e| e.restarts == 1));
    assert_eq!(sim.rolled_off, 0);
    let primary = sim.status.primary.clone().unwrap();
    let log = &sim.engines[&primary].log;
    assert!(sim.acked.iter().all(|(_, seqno, term)| log.get(*seqno as usize - 1) == Some(term)));
    // At rest again: only the lease.
    let plan = sim.tick(500);
    assert_eq!(plan.actions, [Action::Lease { instance: primary, term: sim.status.term }]);
}

#[test]
fn a_supervised_upgrade_waits_for_a_person_to_move_the_primary_role() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    sim.supervised = true;
    assert!(sim.run(10_000, Sim::healthy));
    sim.set_spec_image("v2");
    assert!(sim.run(30_000, |s| s.status.upgrade.as_ref().is_some_and(|u| u.step == UP_PRIMARY)));
    sim.run(30_000, |_| false);
    // The upgraded secondary stops streaming for a while (a restart, a network blip): the
    // primary is not restarted in its place.
    sim.freeze("brynmawr");
    sim.run(5_000, |_| false);
    sim.back("brynmawr");
    sim.run(25_000, |_| false);
    assert_eq!(sim.engines["ardmore"].restarts, 0, "the primary was restarted without being asked");
    assert_eq!(sim.status.primary.as_deref(), Some("ardmore"), "moved without being asked");
    assert_eq!(sim.engines["ardmore"].pod_image, "v1");
    assert_eq!(sim.engines["brynmawr"].pod_image, "v2");
    assert!(
        sim.status.message.as_deref().unwrap_or("").contains("kubectl strand switchover fam --to brynmawr")
    );
    sim.requests.insert("brynmawr".into(), Requests { switchover: Some("s1".into()), ..Default::default() });
    assert!(run_upgrade(&mut sim, 60_000), "{:?}", sim.status);
    assert!(sim.run(20_000, |s| s.healthy() && s.all_on("v2")), "{:?}", sim.status);
    assert_eq!(sim.status.primary.as_deref(), Some("brynmawr"));
}

#[test]
fn a_lone_instance_restarts_in_place_and_upgrades_its_format() {
    let mut sim = Sim::new(&["ardmore"], &[]);
    sim.run(2_000, |_| false);
    sim.set_spec_image("v2");
    assert!(run_upgrade(&mut sim, 30_000), "{:?}", sim.status);
    assert!(sim.all_on("v2"), "{:?}", sim.engines["ardmore"]);
    assert!(sim.engines["ardmore"].status.upgrade_prepared);
}

#[test]
fn the_restart_method_upgrades_the_primary_in_place() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    sim.restart = true;
    assert!(sim.run(10_000, Sim::healthy));
    sim.set_spec_image("v2");
    assert!(run_upgrade(&mut sim, 60_000), "{:?}", sim.status);
    assert!(sim.run(20_000, |s| s.healthy() && s.all_on("v2")), "{:?}", sim.status);
    assert_eq!(sim.status.primary.as_deref(), Some("ardmore"), "the role stayed");
    assert!(sim.status.history.iter().all(|r| r.kind != SWITCHOVER));
}

#[test]
fn an_upgrade_goes_back_before_the_format_moved_and_not_after() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.set_spec_image("v2");
    assert!(sim.run(30_000, |s| s.engines["brynmawr"].pod_image == "v2"));
    // Back to v1: the secondary returns to v1; the family ends where it began.
    sim.set_spec_image("v1");
    let plan = sim.tick(500);
    assert!(plan.notes.iter().any(|n| n.reason == "UpgradeReverting"), "{:?}", plan.notes);
    assert!(run_upgrade(&mut sim, 60_000), "{:?}", sim.status);
    assert!(sim.run(20_000, |s| s.healthy() && s.all_on("v1")), "{:?}", sim.status);
    assert_eq!(sim.status.history.last().map(|r| r.outcome.as_str()), Some("Reverted"));
    // Forward again, all the way; then back is refused: v1 cannot read format 2.
    sim.set_spec_image("v2");
    assert!(run_upgrade(&mut sim, 120_000), "{:?}", sim.status);
    assert!(sim.run(20_000, |s| s.healthy() && s.all_on("v2")));
    sim.set_spec_image("v1");
    sim.run(20_000, |_| false);
    assert!(sim.all_on("v2"), "a member went back to v1 on format-2 data");
}

#[test]
fn an_upgrade_called_off_before_any_member_moved_leaves_no_trace_but_an_event() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.set_spec_image("v2");
    let plan = sim.tick(500); // prepared; nobody released yet
    assert!(plan.status.upgrade.as_ref().is_some_and(|u| u.released.is_empty()), "{:?}", plan.status.upgrade);
    sim.set_spec_image("v1");
    let plan = sim.tick(500);
    assert!(plan.notes.iter().any(|n| n.reason == "UpgradeCancelled"), "{:?}", plan.notes);
    assert!(sim.status.upgrade.is_none());
    sim.run(10_000, |_| false);
    assert!(sim.status.upgrade.is_none(), "started again: {:?}", sim.status.upgrade);
    assert!(sim.engines.values().all(|e| e.restarts == 0 && e.pod_image == "v1"));
}

#[test]
fn a_failover_to_an_upgraded_secondary_mid_upgrade_moves_the_format_at_once() {
    let mut sim =
        Sim::new(&["ardmore", "brynmawr", "oxford"], &[("ardmore", "brynmawr"), ("ardmore", "oxford")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.set_spec_image("v2");
    // BrynMawr is upgraded and streams in mismatch mode; Oxford's turn has come.
    assert!(sim.run(30_000, |s| s.engines["brynmawr"].pod_image == "v2"
        && s.engines["brynmawr"].status.receiver.as_ref().is_some_and(|r| r.state == "streaming")
        && s.engines["oxford"].restarting));
    sim.crash("ardmore");
    assert!(
        sim.run(60_000, |s| s.status.primary.as_deref().is_some_and(|p| p != "ardmore")),
        "{:?}",
        sim.status
    );
    let promoted = sim.now;
    let primary = sim.status.primary.clone().unwrap();
    assert!(
        sim.run(5_000, |s| s.engines[&primary].takes_writes(s.now)),
        "{primary} still refuses clients {} ms after its promotion: {:?}",
        sim.now - promoted,
        sim.engines[&primary].status
    );
    sim.back("ardmore");
    assert!(run_upgrade(&mut sim, 120_000), "{:?}", sim.status);
    assert!(sim.run(30_000, |s| s.healthy() && s.all_on("v2")), "{:?}", sim.status);
}

#[test]
fn an_aborted_upgrade_switchover_warns_and_tries_again_later() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.set_spec_image("v2");
    assert!(sim.run(30_000, |s| s.status.procedure.as_ref().is_some_and(|p| p.kind == SWITCHOVER)));
    sim.freeze("brynmawr"); // it will not apply the failover record in time
    assert!(sim.run(30_000, |s| s.status.history.last().is_some_and(|r| r.outcome == "Aborted")));
    sim.back("brynmawr");
    let aborted = sim.now;
    let mut warned = 0;
    let mut began = None;
    while sim.now < aborted + 60_000 && began.is_none() {
        let plan = sim.tick(500);
        warned += plan.notes.iter().filter(|n| n.reason == "UpgradeStuck").count();
        if plan.status.procedure.is_some() {
            began = Some(sim.now);
        }
    }
    assert_eq!(warned, 1);
    let began = began.expect("never tried again");
    assert!(began - aborted >= 30_000, "tried again after {} ms", began - aborted);
    assert!(run_upgrade(&mut sim, 60_000), "{:?}", sim.status);
    assert!(sim.run(20_000, |s| s.healthy() && s.all_on("v2")));
}

#[test]
fn members_asking_for_different_images_hold_the_upgrade() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.engines.get_mut("brynmawr").unwrap().spec_image = "v2".into();
    sim.run(20_000, |_| false);
    assert!(sim.status.upgrade.is_none());
    assert!(sim.engines.values().all(|e| e.pod_image == "v1"));
    assert!(
        sim.status.message.as_deref().unwrap_or("").contains("different images"),
        "{:?}",
        sim.status.message
    );
}

#[test]
fn a_secondary_that_does_not_come_back_on_the_new_image_stops_the_upgrade_with_a_warning() {
    let mut sim = Sim::new(&["ardmore", "brynmawr"], &[("ardmore", "brynmawr")]);
    assert!(sim.run(10_000, Sim::healthy));
    sim.set_spec_image("v2");
    assert!(sim.run(10_000, |s| s.engines["brynmawr"].restarting));
    // Its new pod never becomes ready (a bad image, a crash loop).
    sim.engines.get_mut("brynmawr").unwrap().restarting = false;
    let mut stuck = 0;
    for _ in 0..100 {
        stuck += sim.tick(500).notes.iter().filter(|n| n.reason == "UpgradeStuck" && n.warning).count();
    }
    assert_eq!(stuck, 1, "one warning, not one per step");
    assert!(
        sim.status.message.as_deref().unwrap_or("").contains("upgrade stuck"),
        "{:?}",
        sim.status.message
    );
    assert_eq!(sim.engines["ardmore"].pod_image, "v1", "the primary was touched");
    assert_eq!(sim.status.primary.as_deref(), Some("ardmore"));
    assert!(sim.engines["ardmore"].takes_writes(sim.now));
}

#[test]
fn an_instance_keeps_its_image_until_released_and_a_new_one_joins_on_the_familys() {
    let up = Upgrade { image: "e:2".into(), released: vec!["a".into()], ..Default::default() };
    assert_eq!(image_for("a", "e:2", Some(&up), Some("e:1"), Some("e:1")), "e:2");
    assert_eq!(image_for("b", "e:2", Some(&up), Some("e:1"), Some("e:1")), "e:1");
    // New (no StatefulSet yet): the family primary's image, whatever its spec says.
    assert_eq!(image_for("c", "e:2", Some(&up), None, Some("e:1")), "e:1");
    assert_eq!(image_for("c", "e:2", None, None, Some("e:1")), "e:1");
    // The first of its family: its spec's.
    assert_eq!(image_for("d", "e:2", None, None, None), "e:2");
}

#[test]
fn image_tags_compare_by_version() {
    assert_eq!(image_version("registry:5000/strand-engine:v0.2.0-rc1"), Some(vec![0, 2, 0]));
    assert_eq!(image_version("strand-engine:0.10.1"), Some(vec![0, 10, 1]));
    assert_eq!(image_version("strand-engine@sha256:abc"), None);
    assert_eq!(image_version("registry:5000/strand-engine"), None);
    assert!(older("strand-engine:0.9.0", "strand-engine:0.10.0"));
    assert!(!older("strand-engine:0.10.0", "strand-engine:0.10.0"));
    assert!(!older("strand-engine:latest", "strand-engine:0.2.0"), "unknown: the engine decides");
}

#[derive(Debug, Clone)]
enum Fault {
    Crash(usize),
    Freeze(usize),
    Back(usize),
    Switchover(usize),
    Failover(usize),
    Upgrade,
    Wait,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0usize..3).prop_map(Fault::Crash),
        (0usize..3).prop_map(Fault::Freeze),
        (0usize..3).prop_map(Fault::Back),
        (0usize..3).prop_map(Fault::Switchover),
        (0usize..3).prop_map(Fault::Failover),
        Just(Fault::Upgrade),
        Just(Fault::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    /// Random crashes, freezes, returns and requests at random moments: every plan obeys the
    /// safety rules (checked in `plan`), no two engines ever take writes at once (checked in
    /// `write`), and once everything is back the family heals.
    #[test]
    fn random_faults_never_make_two_writers_and_the_family_heals(faults in proptest::collection::vec((fault(), 500u64..20_000), 1..12)) {
        let names = ["ardmore", "brynmawr", "oxford"];
        let mut sim = Sim::new(&names, &[("ardmore", "brynmawr"), ("brynmawr", "oxford")]);
        sim.run(10_000, Sim::healthy);
        for (i, (f, gap)) in faults.iter().enumerate() {
            match f {
                Fault::Crash(n) => sim.crash(names[*n]),
                Fault::Freeze(n) => sim.freeze(names[*n]),
                Fault::Back(n) => sim.back(names[*n]),
                Fault::Switchover(n) => {
                    sim.requests.entry(names[*n].into()).or_default().switchover = Some(format!("s{i}"));
                }
                Fault::Failover(n) => {
                    sim.requests.entry(names[*n].into()).or_default().failover = Some(format!("f{i}"));
                }
                Fault::Upgrade => {
                    // The image after the newest format the data is in (a person asks for
                    // the next release; asking again before the format moved changes nothing).
                    let next = sim.engines.values().map(|e| e.status.format_version).max().unwrap() + 1;
                    sim.set_spec_image(&format!("v{next}"));
                }
                Fault::Wait => {}
            }
            sim.run(*gap, |_| false);
        }
        for n in names {
            sim.back(n);
        }
        let image = sim.engines["ardmore"].spec_image.clone();
        prop_assert!(
            sim.run(300_000, |s| s.healthy() && s.status.procedure.is_none() && s.status.upgrade.is_none() && s.all_on(&image)),
            "did not heal: {:?}",
            sim.status
        );
        let writers: Vec<&str> = names.iter().copied().filter(|n| sim.engines[*n].status.writable_role()).collect();
        prop_assert_eq!(writers.len(), 1);
        // Every acknowledged write is on the primary or in an unreplicated-transaction log.
        let log = &sim.engines[writers[0]].log;
        for (_, seqno, term) in &sim.acked {
            let kept = log.get(*seqno as usize - 1) == Some(term);
            prop_assert!(kept || sim.lost_log.contains(&(*seqno, *term)), "write {}@{} lost", seqno, term);
        }
    }
}

/// A source whose receiver needs records its journal no longer holds shows as
/// ReseedRequired, with the engine's reason.
#[test]
fn a_receiver_needing_trimmed_records_shows_as_reseed_required() {
    let mut report = LinkReport::default();
    let source = Source {
        receiver: "brynmawr".into(),
        state: "needs_reseed".into(),
        backlog: 500,
        last_error: Some("brynmawr needs ardmore's journal from seqno 3, but it begins at 900".into()),
        ..Source::default()
    };
    fill_from_source(&mut report, &source, None);
    assert_eq!(report.state, "ReseedRequired");
    assert_eq!(report.reason.as_deref(), source.last_error.as_deref());
}

/// A source sending its snapshot to a receiver being seeded shows as Seeding.
#[test]
fn a_receiver_being_seeded_shows_as_seeding() {
    let mut report = LinkReport::default();
    let source = Source { receiver: "brynmawr".into(), state: "seeding".into(), ..Source::default() };
    fill_from_source(&mut report, &source, None);
    assert_eq!(report.state, "Seeding");
}
