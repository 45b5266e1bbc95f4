//! One step of a family's lifecycle: from the persisted [`FamilyStatus`] and what every
//! member's engine reports now, the next status and the engine calls that move the family
//! towards it. Pure and deterministic; the controller persists the status *before* carrying
//! out the actions, so a crash between the two repeats the step, and every action is planned
//! only when the observed state shows it is still needed, so repeating it does nothing twice.
//!
//! Safety rules, each asserted by the property test at the bottom:
//! - at most one promotion per step, at a term above every term observed;
//! - a member is promoted only when no other member is observed writable, and the old
//!   primary has either been observed fenced or is unreachable with its lease provably lapsed;
//! - a lease is renewed only for the family's primary, at the family's term.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::topology::{self, BcEdge};
use crate::crd::family::{HandledRequest, Procedure, ProcedureRecord, StepTime, Upgrade};
use crate::crd::{FamilyStatus, Mode, ReplicationLinkSpec};
use crate::engine_status::EngineStatus;

/// Procedure kinds and steps, as written in `Family.status.procedure`.
pub const SWITCHOVER: &str = "Switchover";
pub const FAILOVER: &str = "Failover";
pub const FENCING: &str = "Fencing";
pub const CATCHING_UP: &str = "CatchingUp";
pub const PROMOTING: &str = "Promoting";
pub const REPOINTING: &str = "Repointing";
/// Procedures kept in `status.history`; requests kept in `status.handled`.
pub const HISTORY_MAX: usize = 10;
/// The image Instance `name` runs: a new one only once its family's upgrade released it (the
/// family decides the order, docs/upgrades.md); until then the one it runs (`running`, its
/// StatefulSet's). A new instance starts on the image its family's primary runs
/// (`family_image`), so it joins on the family's format and is upgraded with the others;
/// with no family primary yet, on its spec's.
pub fn image_for(
    name: &str,
    spec_image: &str,
    upgrade: Option<&Upgrade>,
    running: Option<&str>,
    family_image: Option<&str>,
) -> String {
    if let Some(up) = upgrade.filter(|u| u.released.iter().any(|r| r == name)) {
        return up.image.clone();
    }
    running.or(family_image).unwrap_or(spec_image).to_owned()
}

/// The version in an image reference's tag (`registry:5000/strand-engine:v0.2.0-rc1` →
/// [0, 2, 0]), when it has one.
pub fn image_version(image: &str) -> Option<Vec<u64>> {
    let image = image.split('@').next().unwrap_or(image);
    let (_, tag) = image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or(("", image));
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let core = tag.split(['-', '+']).next().unwrap_or(tag);
    core.split('.').map(|p| p.parse::<u64>().ok()).collect()
}

/// Whether image `a` is an older version than image `b` (both tags carry a version).
pub fn older(a: &str, b: &str) -> bool {
    match (image_version(a), image_version(b)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// Upgrade steps, as written in `Family.status.upgrade.step`.
pub const UP_PREPARING: &str = "Preparing";
pub const UP_SECONDARIES: &str = "Secondaries";
pub const UP_PRIMARY: &str = "Primary";
pub const UP_FORMAT: &str = "UpgradingFormat";
pub const UP_FINISHING: &str = "Finishing";
pub const HANDLED_MAX: usize = 32;

/// Deadlines and delays (chart values; docs/lifecycle.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// How long the primary must be unavailable before an automatic failover.
    pub failover_delay: Duration,
    /// How long a switchover may take to fence the primary.
    pub fence_deadline: Duration,
    /// How long a switchover waits for its target to apply the failover record.
    pub catch_up_deadline: Duration,
    /// How long an upgrade waits for one step (a member back on the new image and caught
    /// up) before it says it is stuck.
    pub upgrade_step_deadline: Duration,
    /// After which re-pointing is declared done with a warning.
    pub repoint_deadline: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            failover_delay: Duration::from_secs(30),
            fence_deadline: Duration::from_secs(30),
            catch_up_deadline: Duration::from_secs(60),
            repoint_deadline: Duration::from_secs(60),
            upgrade_step_deadline: Duration::from_secs(300),
        }
    }
}

/// Requests read from a member's annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requests {
    pub switchover: Option<String>,
    pub failover: Option<String>,
    pub rollback: Option<String>,
    pub drain: Option<String>,
}

/// One member as observed.
#[derive(Debug, Clone)]
pub struct MemberView<'a> {
    pub name: &'a str,
    /// `spec.paused`: nothing is done to it.
    pub paused: bool,
    /// Where its replication listener is (pod IP), once its pod is ready.
    pub repl_addr: Option<&'a str>,
    /// Its engine's status; `None` while unreachable or not ready.
    pub engine: Option<&'a EngineStatus>,
    /// The term its Instance status last showed (known even while its engine does not answer).
    pub last_term: Option<u64>,
    /// No lease grant sent to it can still run (a lease and a call timeout since the last one
    /// was sent, or since this replica began to lead).
    pub lease_over: bool,
    /// The image its spec asks for.
    pub spec_image: &'a str,
    /// The image its StatefulSet runs it with now (`None`: no StatefulSet yet).
    pub set_image: Option<&'a str>,
    /// The image of its ready pod.
    pub pod_image: Option<&'a str>,
    /// Its `primaryUpdateStrategy` is `supervised` (read from the primary).
    pub supervised: bool,
    /// Its `primaryUpdateMethod` is `restart` (read from the primary).
    pub restart: bool,
    pub requests: Requests,
}

/// A link this family reports on.
#[derive(Debug, Clone)]
pub struct LinkView<'a> {
    pub name: &'a str,
    pub spec: &'a ReplicationLinkSpec,
    pub deleting: bool,
    /// Why the namespace rules block it.
    pub blocked: Option<&'a str>,
    /// This family reports on it and releases it when deleted (a BC link of the family, an SI
    /// link it sources, a blocked link from one of its members). An SI link *into* the family
    /// is in the view only to say the family needs a primary.
    pub owned: bool,
}

/// The receiving end of an SI link this family sources: the target family's current primary.
#[derive(Debug, Clone)]
pub struct SiPeer<'a> {
    pub name: &'a str,
    pub repl_addr: Option<&'a str>,
    pub engine: Option<&'a EngineStatus>,
}

/// Everything one step decides from.
#[derive(Debug, Clone)]
pub struct FamilyView<'a> {
    pub name: &'a str,
    /// Sorted by name.
    pub members: Vec<MemberView<'a>>,
    /// Every link with at least one end in the family (BC among members, SI sourced by a
    /// member, blocked or deleted ones).
    pub links: Vec<LinkView<'a>>,
    /// Per SI link sourced here: the target family's current primary (`None`: unknown yet).
    pub si_peers: BTreeMap<String, SiPeer<'a>>,
    pub status: &'a FamilyStatus,
    pub now: Timestamp,
    /// How long `status.primary` has been continuously unavailable (unreachable, or not a
    /// writable primary at the family's term), by the operator's clock; zero when available.
    pub primary_unavailable_for: Duration,
    /// Whether `status.primary`'s role lease has provably lapsed by the operator's clock: the
    /// engine was seen to require a lease, and nothing granted to it can still run.
    pub primary_lease_lapsed: bool,
    /// Whether a lease and a call timeout have passed since anything was granted to the
    /// primary, whether or not it was ever seen to require one: enough for a *forced*
    /// failover, where a person vouches that the old primary is gone.
    pub primary_presumed_gone: bool,
    pub timing: &'a Timing,
}

/// One engine admin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `POST /v1/promote {term, lease: true}`; `lease: false` releases a lone instance.
    Promote { instance: String, term: u64, lease: bool },
    /// `POST /v1/lease {term, duration_ms}`.
    Lease { instance: String, term: u64 },
    /// `POST /v1/failover {term}`: failover record, read-only.
    Fence { instance: String, term: u64 },
    /// `POST /v1/demote {term}`.
    Demote { instance: String, term: u64 },
    /// `POST /v1/receiver/start`.
    ReceiverStart {
        instance: String,
        si: bool,
        autorollback: bool,
        noresync: bool,
        /// BC: seed from the source's snapshot when its journal no longer reaches back.
        seed: bool,
        updateresync: Option<String>,
        updateresync_from: Option<String>,
        term: Option<u64>,
    },
    /// `POST /v1/receiver/stop`.
    ReceiverStop { instance: String },
    /// `POST /v1/sources`.
    SourceStart { instance: String, receiver: String, addr: String, si: bool },
    /// `DELETE /v1/sources/{receiver}`.
    SourceStop { instance: String, receiver: String },
    /// `POST /v1/rollback {fetchresync}`.
    Rollback { instance: String, fetchresync: String },
    /// `POST /v1/prepare-upgrade`: on the primary, what the next format needs (journaled).
    PrepareUpgrade { instance: String },
    /// `POST /v1/upgrade-format`: on the primary, the `Upgrade` record.
    UpgradeFormat { instance: String },
}

impl Action {
    pub fn instance(&self) -> &str {
        match self {
            Action::Promote { instance, .. }
            | Action::Lease { instance, .. }
            | Action::Fence { instance, .. }
            | Action::Demote { instance, .. }
            | Action::ReceiverStart { instance, .. }
            | Action::ReceiverStop { instance }
            | Action::SourceStart { instance, .. }
            | Action::SourceStop { instance, .. }
            | Action::Rollback { instance, .. }
            | Action::PrepareUpgrade { instance }
            | Action::UpgradeFormat { instance } => instance,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Promote { .. } => "promote",
            Action::Lease { .. } => "lease",
            Action::Fence { .. } => "fence",
            Action::Demote { .. } => "demote",
            Action::ReceiverStart { .. } => "receiver_start",
            Action::ReceiverStop { .. } => "receiver_stop",
            Action::SourceStart { .. } => "source_start",
            Action::SourceStop { .. } => "source_stop",
            Action::Rollback { .. } => "rollback",
            Action::PrepareUpgrade { .. } => "prepare_upgrade",
            Action::UpgradeFormat { .. } => "upgrade_format",
        }
    }

    /// The Event reason for an action worth an Event (lease renewals are not).
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Action::Promote { lease: true, .. } => "Promoted",
            Action::Promote { lease: false, .. } => "LeaseReleased",
            Action::Lease { .. } => return None,
            Action::Fence { .. } => "Fenced",
            Action::Demote { .. } => "Demoted",
            Action::ReceiverStart { .. } => "ReceiverStarted",
            Action::ReceiverStop { .. } => "ReceiverStopped",
            Action::SourceStart { .. } => "SourceStarted",
            Action::SourceStop { .. } => "SourceStopped",
            Action::Rollback { .. } => "RolledBack",
            Action::PrepareUpgrade { .. } => "UpgradePrepared",
            Action::UpgradeFormat { .. } => "FormatUpgraded",
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Action::Promote { instance, term, lease: true } => {
                format!("promoted {instance} to primary at term {term}")
            }
            Action::Promote { instance, term, lease: false } => {
                format!("{instance} (term {term}) left its family: it no longer needs a role lease")
            }
            Action::Lease { instance, term } => format!("renewed the role lease of {instance} (term {term})"),
            Action::Fence { instance, term } => {
                format!("fenced {instance}: failover record written, read-only (family term {term})")
            }
            Action::Demote { instance, term } => {
                format!("demoted {instance} to a replicating secondary at term {term}")
            }
            Action::ReceiverStart {
                instance,
                si,
                autorollback,
                noresync,
                seed,
                updateresync,
                updateresync_from,
                ..
            } => {
                format!(
                    "started {} receiver on {instance}{}{}{}{}",
                    if *si { "an SI" } else { "a BC" },
                    if *autorollback { " with autorollback" } else { "" },
                    if *noresync { " with noresync" } else { "" },
                    match (*seed, *si) {
                        (true, false) =>
                            " (seeded from a snapshot if the source's journal does not reach back)",
                        (true, true) => " (the family's first stream seeded from the source's snapshot)",
                        (false, _) => "",
                    },
                    updateresync
                        .as_deref()
                        .or(updateresync_from.as_deref())
                        .map(|u| format!(" seeded from {u}"))
                        .unwrap_or_default()
                )
            }
            Action::ReceiverStop { instance } => format!("stopped the receiver on {instance}"),
            Action::SourceStart { instance, receiver, addr, si } => format!(
                "started {} stream from {instance} to {receiver} at {addr}",
                if *si { "an SI" } else { "a BC" }
            ),
            Action::SourceStop { instance, receiver } => {
                format!("stopped the stream from {instance} to {receiver}")
            }
            Action::Rollback { instance, fetchresync } => {
                format!("rolled {instance} back to its common point with {fetchresync} (fetchresync)")
            }
            Action::PrepareUpgrade { instance } => {
                format!("prepared {instance}'s data for the next format (a journaled write that replicates)")
            }
            Action::UpgradeFormat { instance } => {
                format!("upgraded the format of {instance}'s data (an upgrade record its secondaries replay)")
            }
        }
    }
}

/// What a link reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkReport {
    pub state: String,
    pub reason: Option<String>,
    pub current_source: Option<String>,
    pub current_target: Option<String>,
    pub backlog: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub stream: Option<u8>,
}

/// Where an Event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Family,
    Instance(String),
    Link(String),
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub subject: Subject,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The outcome of one step.
#[derive(Debug, Clone, Default)]
pub struct FamilyPlan {
    /// The status to persist before acting.
    pub status: FamilyStatus,
    /// Engine calls, in order; the controller stops at the first failure.
    pub actions: Vec<Action>,
    pub links: BTreeMap<String, LinkReport>,
    pub notes: Vec<Note>,
    /// Deleted links whose finalizer may go once every action succeeded.
    pub release: Vec<String>,
    /// Requests to record as handled once every action succeeded.
    pub handled_after: Vec<HandledRequest>,
    /// A procedure is running: look again soon rather than at the next refresh.
    pub busy: bool,
}

struct Planner<'v, 'a> {
    view: &'v FamilyView<'a>,
    st: FamilyStatus,
    out: FamilyPlan,
    /// Where the image upgrade stands or why it waits (joins the family's message).
    upgrade_note: Option<String>,
}

/// One step. See the module documentation.
pub fn plan(view: &FamilyView<'_>) -> FamilyPlan {
    let mut p = Planner { view, st: view.status.clone(), out: FamilyPlan::default(), upgrade_note: None };
    p.st.members = view.members.iter().map(|m| m.name.to_owned()).collect();
    p.step();
    // Upgrade calls go right after the primary's lease (they are writes it must be allowed to
    // make), and before the other members' calls (a failing one stops the rest).
    let (upgrade, mut actions): (Vec<Action>, Vec<Action>) = std::mem::take(&mut p.out.actions)
        .into_iter()
        .partition(|a| matches!(a, Action::PrepareUpgrade { .. } | Action::UpgradeFormat { .. }));
    let at = actions
        .iter()
        .position(|a| matches!(a, Action::Lease { instance, .. } if Some(instance) == p.st.primary.as_ref()))
        .map_or(actions.len(), |i| i + 1);
    actions.splice(at..at, upgrade);
    p.out.actions = actions;
    if let Some(note) = p.upgrade_note.take() {
        // A family otherwise healthy shows the upgrade as its phase.
        if p.st.phase.as_deref() == Some("Healthy") && p.st.upgrade.is_some() {
            p.st.phase = Some("Upgrading".into());
        }
        p.st.message = Some(match p.st.message.take() {
            Some(m) if p.st.phase.as_deref() != Some("Healthy") => format!("{m}; {note}"),
            _ => note,
        });
    }
    p.out.status = p.st;
    p.out
}

fn writable(e: &EngineStatus) -> bool {
    e.writable_role()
}

/// A step time as written by [`ts`] (`None` if it does not parse).
fn stamp(at: &str) -> Option<Timestamp> {
    at.parse().ok()
}

fn ts(t: Timestamp) -> String {
    t.to_string()
}

fn elapsed_since(now: Timestamp, at: &str) -> Duration {
    at.parse::<Timestamp>().ok().and_then(|t| now.duration_since(t).try_into().ok()).unwrap_or(Duration::ZERO)
}

impl<'v, 'a> Planner<'v, 'a> {
    fn member(&self, name: &str) -> Option<&'v MemberView<'a>> {
        self.view.members.iter().find(|m| m.name == name)
    }

    fn engine(&self, name: &str) -> Option<&'a EngineStatus> {
        self.member(name).and_then(|m| if m.paused { None } else { m.engine })
    }

    fn note(&mut self, subject: Subject, warning: bool, reason: &'static str, message: String) {
        self.out.notes.push(Note { subject, warning, reason, message });
    }

    fn act(&mut self, action: Action) {
        if !self.out.actions.contains(&action) {
            self.out.actions.push(action);
        }
    }

    /// The usable BC links among members (not blocked, not being deleted).
    fn bc_edges(&self) -> Vec<BcEdge> {
        self.view
            .links
            .iter()
            .filter(|l| l.spec.mode == Mode::Bc && !l.deleting && l.blocked.is_none())
            .filter(|l| self.member(&l.spec.source).is_some() && self.member(&l.spec.target).is_some())
            .map(|l| BcEdge {
                link: l.name.to_owned(),
                source: l.spec.source.clone(),
                target: l.spec.target.clone(),
            })
            .collect()
    }

    fn si_links(&self) -> Vec<&'v LinkView<'a>> {
        self.view
            .links
            .iter()
            .filter(|l| {
                l.spec.mode == Mode::Si
                    && l.owned
                    && l.blocked.is_none()
                    && self.member(&l.spec.source).is_some()
            })
            .collect()
    }

    /// The highest term anyone in the family has seen.
    fn highest_term(&self) -> u64 {
        self.view
            .members
            .iter()
            .flat_map(|m| [m.engine.map(|e| e.term), m.last_term])
            .flatten()
            .fold(self.st.term, u64::max)
    }

    /// The term a new promotion gets.
    fn next_term(&self) -> u64 {
        self.highest_term().saturating_add(1)
    }

    fn handled(&self, instance: &str, kind: &str, id: &str) -> bool {
        self.st.handled.iter().any(|h| h.instance == instance && h.kind == kind && h.id == id)
    }

    fn record_handled(&mut self, instance: &str, kind: &str, id: &str, outcome: String) {
        self.st.handled.retain(|h| !(h.instance == instance && h.kind == kind));
        self.st.handled.push(HandledRequest {
            instance: instance.to_owned(),
            kind: kind.to_owned(),
            id: id.to_owned(),
            outcome,
            at: ts(self.view.now),
        });
        let excess = self.st.handled.len().saturating_sub(HANDLED_MAX);
        self.st.handled.drain(..excess);
    }

    fn step(&mut self) {
        self.report_static_links();
        let edges = self.bc_edges();
        // SI links count both ways: a supplementary instance fed by one is its family's
        // primary (the source family runs the stream itself).
        let has_links = !edges.is_empty()
            || self.view.links.iter().any(|l| l.spec.mode == Mode::Si && l.blocked.is_none() && !l.deleting);
        if !has_links {
            self.standalone();
            // A lone instance changes its image in place: restart, then its format.
            let lone = self.view.members.first().map(|m| m.name.to_owned());
            self.upgrade(lone.as_deref(), false);
            return;
        }
        self.adopt_or_bootstrap(&edges);
        let Some(primary) = self.st.primary.clone() else {
            return;
        };
        self.preempt_for_forced_failover();
        if self.st.procedure.is_none() && !self.start_requested(&primary, &edges) {
            self.maybe_fail_over(&primary);
        }
        // A procedure just started runs at once: its status is persisted before any action.
        let had_procedure = self.st.procedure.is_some();
        if had_procedure {
            self.run_procedure();
        }
        // An upgrade goes on only in a step no procedure acted in (its switchover must see
        // the family as the last procedure left it, not as this step's actions will).
        if !had_procedure {
            let primary = self.st.primary.clone();
            self.upgrade(primary.as_deref(), false);
            if self.st.procedure.is_some() {
                self.run_procedure();
            }
        } else if self.primary_moved() {
            // An upgrade's switchover has made its target the primary (promoted in this very
            // step, or re-pointing): its format moves at once, since a primary in
            // version-mismatch mode serves no client.
            let primary = self.st.primary.clone();
            self.upgrade(primary.as_deref(), true);
        }
        self.handle_rollback_requests(&edges);
        // Streams follow whoever is primary now (the old one while a procedure has not
        // promoted yet: the target must keep receiving until it has everything).
        let root = self.st.primary.clone().unwrap_or(primary);
        self.converge(&root, &edges);
        self.repointing_done();
        self.phase(&root);
    }

    /// Links reported without looking at engines: blocked ones.
    fn report_static_links(&mut self) {
        for l in self.view.links.iter().filter(|l| l.owned) {
            if let Some(reason) = l.blocked {
                self.out.links.insert(
                    l.name.to_owned(),
                    LinkReport {
                        state: "Blocked".into(),
                        reason: Some(reason.to_owned()),
                        ..Default::default()
                    },
                );
                if l.deleting {
                    self.out.release.push(l.name.to_owned());
                }
            }
        }
    }

    /// A family of one without links: no primary to keep, no lease to renew. Its member, if
    /// it was this family's recorded primary and still requires a lease, is released so it
    /// keeps its writes; any other writable member (a deposed primary split off with it) is
    /// left read-only until a person decides.
    fn standalone(&mut self) {
        self.st.phase = Some("Standalone".into());
        self.st.message = None;
        let recorded = self.st.primary.take();
        self.st.procedure = None;
        for m in &self.view.members {
            if let Some(e) = m.engine
                && !m.paused
                && writable(e)
                && e.lease.required
                && recorded.as_deref() == Some(m.name)
                && e.term >= self.st.term
            {
                self.out.actions.push(Action::Promote {
                    instance: m.name.to_owned(),
                    term: e.term,
                    lease: false,
                });
            }
        }
        self.release_deleted_links(&BTreeMap::new());
    }

    /// Adopts a writable member at a higher term than the family knows (a promotion the
    /// operator did not record: it crashed right after, or a person promoted by hand), or
    /// makes a member the first primary. A family whose members never belonged to one is
    /// founded by its founder at once; one that shows traces of an earlier family (a term,
    /// a required lease — its Family object was renamed or re-created) is founded only once
    /// every member answers, by the most advanced of them, since one that does not answer
    /// may still be a primary.
    fn adopt_or_bootstrap(&mut self, edges: &[BcEdge]) {
        let running_target = self.st.procedure.as_ref().and_then(|p| p.to.clone().map(|t| (t, p.term)));
        let best = self
            .view
            .members
            .iter()
            .filter_map(|m| m.engine.map(|e| (m, e)))
            .filter(|(_, e)| writable(e))
            .max_by_key(|(m, e)| (e.term, e.journal_seqno, std::cmp::Reverse(m.name)));
        if let Some((m, e)) = best {
            let newer = e.term > self.st.term || self.st.primary.is_none();
            let expected = running_target.as_ref().is_some_and(|(t, term)| t == m.name && *term == e.term);
            if newer && !expected {
                if let Some(p) = self.st.procedure.take() {
                    self.finish(
                        p,
                        "Aborted",
                        Some(format!("{} became primary at term {} meanwhile", m.name, e.term)),
                    );
                }
                let message = format!("{} is primary at term {}; the family follows it", m.name, e.term);
                self.note(Subject::Family, false, "PrimaryAdopted", message);
                self.st.primary = Some(m.name.to_owned());
                self.st.term = e.term;
                return;
            }
        }
        if self.st.primary.is_some() {
            return;
        }
        let members: BTreeSet<String> = self.view.members.iter().map(|m| m.name.to_owned()).collect();
        let refs: Vec<&BcEdge> = edges.iter().collect();
        let Some(founder) = topology::founder(&members, &refs).map(str::to_owned) else { return };
        let traces = self.highest_term() > 0
            || self.view.members.iter().any(|m| m.engine.is_some_and(|e| e.lease.required));
        let silent: Vec<&str> =
            self.view.members.iter().filter(|m| m.engine.is_none()).map(|m| m.name).collect();
        let chosen = if !traces {
            self.engine(&founder).map(|_| founder.clone())
        } else if silent.is_empty() {
            self.most_advanced(None)
        } else {
            None
        };
        match chosen {
            Some(first) => {
                let term = self.next_term();
                self.st.primary = Some(first.clone());
                self.st.term = term;
                self.note(
                    Subject::Family,
                    false,
                    "Founded",
                    format!("{first} founds the family as its primary at term {term}"),
                );
                self.act(Action::Promote { instance: first.clone(), term, lease: true });
                self.act(Action::Lease { instance: first, term });
            }
            None => {
                self.st.phase = Some("Pending".into());
                self.st.message = Some(if traces {
                    format!(
                        "waiting for {} to answer before choosing a primary (its members belonged to a family before; one that does not answer may still be its primary)",
                        silent.join(", ")
                    )
                } else {
                    format!("waiting for {founder}'s engine to found the family")
                });
            }
        }
    }

    // ---- procedures ----

    fn begin(&mut self, kind: &str, from: &str, to: Option<&str>, reason: String, forced: bool) {
        let term = self.next_term();
        let now = ts(self.view.now);
        let procedure = Procedure {
            kind: kind.to_owned(),
            from: Some(from.to_owned()),
            to: to.map(str::to_owned),
            term,
            step: FENCING.into(),
            reason: reason.clone(),
            fenced_seqno: None,
            forced,
            steps: vec![StepTime { step: FENCING.into(), at: now }],
        };
        let target = to.map(|t| format!(" to {t}")).unwrap_or_default();
        self.note(
            Subject::Family,
            kind == FAILOVER,
            if kind == FAILOVER { "FailoverStarted" } else { "SwitchoverStarted" },
            format!("{kind} from {from}{target} (term {term}): {reason}"),
        );
        self.st.procedure = Some(procedure);
    }

    fn enter(&mut self, step: &str) {
        let now = ts(self.view.now);
        if let Some(p) = self.st.procedure.as_mut() {
            p.step = step.to_owned();
            p.steps.push(StepTime { step: step.to_owned(), at: now });
        }
    }

    fn finish(&mut self, mut p: Procedure, outcome: &str, message: Option<String>) {
        p.steps.push(StepTime {
            step: if outcome == "Succeeded" { "Done".into() } else { outcome.to_owned() },
            at: ts(self.view.now),
        });
        let record = ProcedureRecord {
            kind: p.kind.clone(),
            from: p.from.clone(),
            to: p.to.clone(),
            term: p.term,
            outcome: outcome.to_owned(),
            reason: p.reason.clone(),
            message: message.clone(),
            steps: p.steps,
        };
        let what = format!(
            "{} from {} to {} {}{}",
            p.kind,
            p.from.as_deref().unwrap_or("?"),
            p.to.as_deref().unwrap_or("?"),
            outcome.to_lowercase(),
            message.map(|m| format!(": {m}")).unwrap_or_default()
        );
        let reason = match (p.kind.as_str(), outcome) {
            (SWITCHOVER, "Succeeded") => "SwitchoverDone",
            (SWITCHOVER, _) => "SwitchoverAborted",
            (_, "Succeeded") => "FailoverDone",
            _ => "FailoverAborted",
        };
        self.note(Subject::Family, outcome != "Succeeded", reason, what);
        self.st.history.push(record);
        let excess = self.st.history.len().saturating_sub(HISTORY_MAX);
        self.st.history.drain(..excess);
    }

    fn step_age(&self) -> Duration {
        let at =
            self.st.procedure.as_ref().and_then(|p| p.steps.last()).map(|s| s.at.clone()).unwrap_or_default();
        elapsed_since(self.view.now, &at)
    }

    fn run_procedure(&mut self) {
        self.out.busy = true;
        // Each arm may advance to the next step within this call.
        for _ in 0..4 {
            let Some(p) = self.st.procedure.clone() else { return };
            let before = p.step.clone();
            match p.step.as_str() {
                FENCING => self.fencing(&p),
                CATCHING_UP => self.catching_up(&p),
                PROMOTING => self.promoting(&p),
                REPOINTING => return,
                _ => {
                    let p = self.st.procedure.take().unwrap_or_default();
                    let message = format!("unknown step {:?}", p.step);
                    self.finish(p, "Aborted", Some(message));
                }
            }
            let now = self.st.procedure.as_ref().map(|p| p.step.clone());
            if now.as_deref() == Some(before.as_str()) || now.is_none() {
                return;
            }
        }
    }

    fn fencing(&mut self, p: &Procedure) {
        let from = p.from.clone().unwrap_or_default();
        let next = if p.kind == SWITCHOVER && !p.forced { CATCHING_UP } else { PROMOTING };
        match self.engine(&from) {
            // Its lease is no longer renewed while a procedure runs: once it has lapsed the
            // primary takes no writes, fenced or not (a fence call that keeps failing cannot
            // hold the family up).
            Some(e) if writable(e) && !self.view.primary_lease_lapsed => {
                self.act(Action::Fence { instance: from, term: p.term.saturating_sub(1) });
            }
            Some(e) => {
                if let Some(proc_) = self.st.procedure.as_mut() {
                    proc_.fenced_seqno = Some(e.journal_seqno);
                }
                self.enter(next);
            }
            None if p.kind == FAILOVER => {
                if self.view.primary_lease_lapsed || (p.forced && self.view.primary_presumed_gone) {
                    self.enter(PROMOTING);
                } else {
                    self.st.message = Some(format!(
                        "waiting for {from}'s role lease to lapse before promoting another member{}",
                        if p.forced {
                            ""
                        } else {
                            " (a primary never seen to hold a lease needs `kubectl strand failover --force`)"
                        }
                    ));
                }
            }
            None => {
                if self.step_age() >= self.view.timing.fence_deadline {
                    // The primary went away during a planned switchover: it becomes a failover
                    // (which waits for its lease), keeping the target.
                    let message =
                        format!("{from} stopped answering while being fenced; failing over instead");
                    self.note(Subject::Family, true, "SwitchoverAborted", message);
                    if let Some(proc_) = self.st.procedure.as_mut() {
                        proc_.kind = FAILOVER.into();
                        proc_.reason = format!("{} (switchover could not fence {from})", proc_.reason);
                    }
                } else {
                    self.st.message = Some(format!("waiting for {from} to answer so it can be fenced"));
                }
            }
        }
    }

    fn catching_up(&mut self, p: &Procedure) {
        let to = p.to.clone().unwrap_or_default();
        let fenced = p.fenced_seqno.unwrap_or(0);
        let applied = self.engine(&to).map(|e| e.journal_seqno);
        if applied.is_some_and(|a| a >= fenced) {
            self.enter(PROMOTING);
            return;
        }
        if self.step_age() >= self.view.timing.catch_up_deadline {
            self.abort_switchover(
                p,
                format!(
                    "{to} did not apply {}'s failover record (seqno {fenced}) within {}s (it has {})",
                    p.from.as_deref().unwrap_or("?"),
                    self.view.timing.catch_up_deadline.as_secs(),
                    applied.map_or("not answered".to_owned(), |a| format!("seqno {a}"))
                ),
            );
        } else {
            self.st.message = Some(format!(
                "waiting for {to} to apply seqno {fenced} (it has {})",
                applied.map_or("?".into(), |a| a.to_string())
            ));
        }
    }

    /// Gives the role back to the fenced old primary, at a term above the one the target
    /// might still receive (a delayed promotion of it can then only make a stale primary).
    fn abort_switchover(&mut self, p: &Procedure, message: String) {
        let from = p.from.clone().unwrap_or_default();
        let Some(e) = self.engine(&from) else {
            // It was seen fenced and has not answered since: it cannot take writes. The family
            // fails over to its most advanced member instead, at a fresh term.
            let term = self.next_term();
            self.note(
                Subject::Family,
                true,
                "SwitchoverAborted",
                format!("{message}; {from} does not answer either: failing over"),
            );
            if let Some(proc_) = self.st.procedure.as_mut() {
                proc_.kind = FAILOVER.into();
                proc_.to = None;
                proc_.term = term;
                proc_.reason = format!("{} (switchover could not finish)", proc_.reason);
            }
            self.enter(PROMOTING);
            return;
        };
        if self.view.members.iter().any(|m| m.name != from && m.engine.is_some_and(writable)) {
            // The target became writable after all: adoption settles it next step.
            return;
        }
        let term = self.highest_term().max(p.term).saturating_add(1);
        if !(writable(e) && e.term == term) {
            self.act(Action::Promote { instance: from.clone(), term, lease: true });
        }
        self.act(Action::Lease { instance: from.clone(), term });
        self.st.primary = Some(from);
        self.st.term = term;
        if let Some(p) = self.st.procedure.take() {
            self.finish(p, "Aborted", Some(message));
        }
    }

    fn promoting(&mut self, p: &Procedure) {
        let from = p.from.clone().unwrap_or_default();
        let target = match p.to.clone() {
            Some(t) => t,
            None => match self.most_advanced(None) {
                Some(t) => {
                    if let Some(proc_) = self.st.procedure.as_mut() {
                        proc_.to = Some(t.clone());
                    }
                    t
                }
                None => {
                    self.st.phase = Some("NoPrimary".into());
                    self.st.message =
                        Some(format!("{from} is gone and no other member answers: nothing to promote"));
                    self.note(
                        Subject::Family,
                        true,
                        "NoPrimary",
                        format!("family {} has no member to promote in place of {from}", self.view.name),
                    );
                    return;
                }
            },
        };
        // Never two writable members: a member other than the target that is still writable
        // (the old primary came back) is fenced first.
        let others: Vec<String> = self
            .view
            .members
            .iter()
            .filter(|m| m.name != target && m.engine.is_some_and(writable) && !m.paused)
            .map(|m| m.name.to_owned())
            .collect();
        if !others.is_empty() {
            for o in others {
                self.act(Action::Fence { instance: o, term: p.term.saturating_sub(1) });
            }
            return;
        }
        let Some(e) =
            self.engine(&target).filter(|e| !(e.term >= p.term && !(writable(e) && e.term == p.term)))
        else {
            // The target went away (or cannot take this term). Once whatever was sent to it
            // can no longer make it a writable primary (no lease granted to it can still run),
            // pick again among the members that answer, at a term above every one used.
            let over = self.member(&target).is_some_and(|m| m.lease_over);
            if self.step_age() >= self.view.timing.catch_up_deadline && over {
                let term = self.highest_term().max(p.term).saturating_add(1);
                let message = format!(
                    "{target} could not be promoted within {}s; choosing again at term {term}",
                    self.view.timing.catch_up_deadline.as_secs()
                );
                self.note(Subject::Family, true, "PromotionRetargeted", message);
                if let Some(proc_) = self.st.procedure.as_mut() {
                    proc_.to = None;
                    proc_.term = term;
                }
                self.enter(PROMOTING);
            } else {
                self.st.message = Some(format!("waiting for {target} to answer to promote it"));
            }
            return;
        };
        // From here the target is the family's primary (being made one): its lease is renewed
        // and the streams turn towards it.
        self.st.primary = Some(target.clone());
        self.st.term = p.term;
        if writable(e) && e.term == p.term {
            self.enter(REPOINTING);
            return;
        }
        self.act(Action::Promote { instance: target.clone(), term: p.term, lease: true });
        self.act(Action::Lease { instance: target, term: p.term });
    }

    /// Re-pointing is done once every link of the family streams (or cannot: paused, or its
    /// receiving member does not answer); judged after the streams were planned.
    fn repointing_done(&mut self) {
        let Some(p) = self.st.procedure.clone().filter(|p| p.step == REPOINTING) else { return };
        let to = p.to.clone().unwrap_or_default();
        let pending: Vec<String> = self
            .out
            .links
            .iter()
            .filter(|(_, r)| {
                !matches!(
                    r.state.as_str(),
                    "Streaming"
                        | "CatchingUp"
                        | "Paused"
                        | "Unreachable"
                        | "Deleting"
                        | "Blocked"
                        | "AwaitingUpgrade"
                )
            })
            .map(|(n, r)| format!("{n} ({})", r.state))
            .collect();
        if pending.is_empty() {
            if let Some(p) = self.st.procedure.take() {
                self.finish(p, "Succeeded", None);
            }
        } else if self.step_age() >= self.view.timing.repoint_deadline {
            if let Some(p) = self.st.procedure.take() {
                let message = format!("{to} is primary; not streaming yet: {}", pending.join(", "));
                self.finish(p, "Succeeded", Some(message));
            }
        } else {
            self.st.message = Some(format!("re-pointing to {to}: waiting for {}", pending.join(", ")));
        }
    }

    /// The reachable member holding the most of the family's transactions (the family's
    /// history is shared, so the highest seqno holds every other member's), not paused.
    fn most_advanced(&self, except: Option<&str>) -> Option<String> {
        self.view
            .members
            .iter()
            .filter(|m| !m.paused && Some(m.name) != except)
            .filter_map(|m| m.engine.map(|e| (m.name, e)))
            .max_by_key(|(name, e)| (e.journal_seqno, std::cmp::Reverse(*name)))
            .map(|(name, _)| name.to_owned())
    }

    // ---- requests ----

    /// Starts a requested switchover or failover, or the switchover a drain asks for.
    /// Returns whether one started.
    fn start_requested(&mut self, primary: &str, edges: &[BcEdge]) -> bool {
        let tree = topology::parents(primary, &edges.iter().collect::<Vec<_>>());
        let members: Vec<&MemberView<'a>> = self.view.members.iter().collect();
        for m in &members {
            if let Some(id) = m.requests.switchover.clone()
                && !self.handled(m.name, "switchover", &id)
            {
                let refusal = if m.name == primary {
                    Some(format!("{} already is the primary", m.name))
                } else if m.paused {
                    Some(format!("{} is paused", m.name))
                } else if m.engine.is_none() {
                    Some(format!("{} does not answer", m.name))
                } else if !tree.contains_key(m.name) {
                    Some(format!("{} is not connected to the primary by BC links", m.name))
                } else if self.engine(primary).is_none_or(|e| !writable(e)) {
                    Some(format!(
                        "the primary {primary} is not available to hand over; use `kubectl strand failover {} --to {} --force`",
                        self.view.name, m.name
                    ))
                } else {
                    None
                };
                match refusal {
                    Some(r) => {
                        let already = m.name == primary;
                        self.note(
                            Subject::Instance(m.name.to_owned()),
                            !already,
                            if already { "SwitchoverNotNeeded" } else { "SwitchoverRefused" },
                            r.clone(),
                        );
                        self.record_handled(m.name, "switchover", &id, r);
                    }
                    None => {
                        self.record_handled(m.name, "switchover", &id, "started".into());
                        self.begin(SWITCHOVER, primary, Some(m.name), format!("requested ({id})"), false);
                        return true;
                    }
                }
            }
            if let Some(id) = m.requests.failover.clone()
                && !self.handled(m.name, "failover", &id)
            {
                if m.name == primary && self.engine(primary).is_some_and(writable) {
                    let r = format!("{} already is the primary", m.name);
                    self.note(Subject::Instance(m.name.to_owned()), false, "FailoverNotNeeded", r.clone());
                    self.record_handled(m.name, "failover", &id, r);
                } else if m.paused {
                    let r = format!("{} is paused", m.name);
                    self.note(Subject::Instance(m.name.to_owned()), true, "FailoverRefused", r.clone());
                    self.record_handled(m.name, "failover", &id, r);
                } else {
                    self.record_handled(m.name, "failover", &id, "started".into());
                    self.begin(FAILOVER, primary, Some(m.name), format!("forced by request ({id})"), true);
                    return true;
                }
            }
        }
        if let Some(p) = self.member(primary)
            && let Some(id) = p.requests.drain.clone()
            && !self.handled(primary, "drain", &id)
        {
            let candidate = self
                .view
                .members
                .iter()
                .filter(|m| m.name != primary && !m.paused && tree.contains_key(m.name))
                .filter_map(|m| m.engine.map(|e| (m.name, e)))
                .filter(|(_, e)| e.receiver.as_ref().is_some_and(|r| r.state == "streaming"))
                .max_by_key(|(name, e)| (e.journal_seqno, std::cmp::Reverse(*name)))
                .map(|(name, _)| name.to_owned());
            match candidate {
                Some(to) if self.engine(primary).is_some_and(writable) => {
                    self.record_handled(primary, "drain", &id, format!("switching over to {to}"));
                    self.begin(
                        SWITCHOVER,
                        primary,
                        Some(&to),
                        format!("drain of {primary}'s pod ({id})"),
                        false,
                    );
                    return true;
                }
                _ => {
                    let message = format!(
                        "{primary}'s pod is being evicted but family {} has no streaming secondary to switch over to; the eviction waits (its PodDisruptionBudget)",
                        self.view.name
                    );
                    self.note(Subject::Instance(primary.to_owned()), true, "NoSecondary", message);
                }
            }
        }
        false
    }

    /// A forced failover request ends whatever procedure runs (a person saw it stuck): the
    /// failover then does its own fencing.
    fn preempt_for_forced_failover(&mut self) {
        let Some(running) = self.st.procedure.clone() else { return };
        let pending = self.view.members.iter().find_map(|m| {
            m.requests.failover.as_ref().filter(|id| !self.handled(m.name, "failover", id)).map(|_| m.name)
        });
        if let Some(to) = pending {
            self.st.procedure = None;
            self.finish(running, "Aborted", Some(format!("superseded by a forced failover to {to}")));
        }
    }

    fn maybe_fail_over(&mut self, primary: &str) {
        let delay = self.view.timing.failover_delay;
        let down = self.view.primary_unavailable_for;
        if down.is_zero() {
            return;
        }
        if down < delay {
            self.st.message = Some(format!(
                "primary {primary} unavailable for {}s (failover after {}s)",
                down.as_secs(),
                delay.as_secs()
            ));
            return;
        }
        if self.most_advanced(None).is_none() {
            self.st.phase = Some("NoPrimary".into());
            self.st.message = Some(format!("primary {primary} unavailable and no member answers"));
            return;
        }
        self.begin(
            FAILOVER,
            primary,
            None,
            format!("primary {primary} unavailable for {}s", down.as_secs()),
            false,
        );
    }

    fn handle_rollback_requests(&mut self, edges: &[BcEdge]) {
        let Some(primary) = self.st.primary.clone() else { return };
        let tree = topology::parents(&primary, &edges.iter().collect::<Vec<_>>());
        for m in &self.view.members {
            let Some(id) = m.requests.rollback.clone() else { continue };
            if self.handled(m.name, "rollback", &id) {
                continue;
            }
            let Some(e) = self.engine(m.name) else { continue };
            let parent = tree.contains_key(m.name).then(|| self.source_for(m.name, &primary, &tree));
            let source = parent.as_deref().and_then(|p| self.member(p)).and_then(|p| p.repl_addr);
            match (writable(e), source) {
                (false, Some(addr)) => {
                    self.act(Action::Rollback { instance: m.name.to_owned(), fetchresync: addr.to_owned() });
                    self.out.handled_after.push(HandledRequest {
                        instance: m.name.to_owned(),
                        kind: "rollback".into(),
                        id,
                        outcome: format!("rolled back against {}", parent.unwrap_or_default()),
                        at: ts(self.view.now),
                    });
                }
                _ => {
                    let r = format!(
                        "{} is {}; only a secondary that is ahead of its source is rolled back this way",
                        m.name, e.role
                    );
                    self.out.notes.push(Note {
                        subject: Subject::Instance(m.name.to_owned()),
                        warning: true,
                        reason: "RollbackRefused",
                        message: r.clone(),
                    });
                    self.record_handled(m.name, "rollback", &id, r);
                }
            }
        }
    }

    // ---- image upgrades (docs/upgrades.md) ----

    /// Whether `m` runs `image` and is back at work: its ready pod runs it, its engine
    /// answers, and (`streaming`) it receives from its source again.
    fn upgraded(&self, m: &MemberView<'a>, image: &str, streaming: bool) -> bool {
        m.set_image == Some(image)
            && m.pod_image == Some(image)
            && m.engine
                .is_some_and(|e| !streaming || e.receiver.as_ref().is_some_and(|r| r.state == "streaming"))
    }

    fn upgrade_step(&mut self, step: &str, note: Option<String>) {
        let now = ts(self.view.now);
        if let Some(up) = self.st.upgrade.as_mut() {
            up.step = step.to_owned();
            up.steps.push(StepTime { step: note.unwrap_or_else(|| step.to_owned()), at: now });
        }
    }

    fn upgrade_age(&self) -> Duration {
        let at =
            self.st.upgrade.as_ref().and_then(|u| u.steps.last()).map(|s| s.at.clone()).unwrap_or_default();
        elapsed_since(self.view.now, &at)
    }

    fn release(&mut self, member: &str, image: &str) {
        let done = self.st.upgrade.as_ref().is_some_and(|u| u.released.iter().any(|r| r == member));
        if done {
            return;
        }
        if let Some(up) = self.st.upgrade.as_mut() {
            up.released.push(member.to_owned());
        }
        let step = self.st.upgrade.as_ref().map(|u| u.step.clone()).unwrap_or_default();
        self.upgrade_step(&step, Some(format!("{step}: {member}")));
        self.note(
            Subject::Instance(member.to_owned()),
            false,
            "UpgradeRolling",
            format!("{member} restarts on {image}"),
        );
    }

    /// Whether a running procedure has moved the primary role already: its target is the
    /// recorded primary and is being promoted in this step, or the streams turn to it.
    fn primary_moved(&self) -> bool {
        let Some(p) = self.st.procedure.as_ref() else { return false };
        let primary = self.st.primary.as_deref();
        p.step == REPOINTING
            || (p.step == PROMOTING
                && self.out.actions.iter().any(
                    |a| matches!(a, Action::Promote { instance, .. } if Some(instance.as_str()) == primary),
                ))
    }

    /// The hot-standby upgrade, one step at a time, when the image its members' specs ask for
    /// is not what they run: prepare the data on the primary; roll each secondary onto the new
    /// image and wait until it streams again (in version-mismatch mode); move the primary
    /// role to an upgraded secondary (a switchover, by itself or when a person asks) or
    /// restart the primary in place; upgrade the format on the new primary; roll the rest,
    /// which upgrade their format by replaying. Going back is possible until the format moved.
    /// `during`: a switchover of this upgrade has just moved the primary role; only the
    /// format step may run.
    fn upgrade(&mut self, primary: Option<&str>, during: bool) {
        let Some(primary) = primary.map(str::to_owned) else { return };
        if self.member(&primary).is_none() {
            return;
        }
        let active: Vec<&MemberView<'a>> = self.view.members.iter().filter(|m| !m.paused).collect();
        let mut wanted: Vec<&str> = active.iter().map(|m| m.spec_image).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let [target] = wanted[..] else {
            if self.st.upgrade.is_some()
                || active.iter().any(|m| m.set_image.is_some_and(|i| i != m.spec_image))
            {
                let asks: Vec<String> =
                    active.iter().map(|m| format!("{} asks for {}", m.name, m.spec_image)).collect();
                self.upgrade_note = Some(format!(
                    "upgrade on hold: the members ask for different images ({}); it goes on once every member of the family asks for the same one",
                    asks.join(", ")
                ));
            }
            return;
        };
        let target = target.to_owned();
        let behind = active.iter().any(|m| m.set_image.is_some_and(|i| i != target));
        let Some(up) = self.st.upgrade.clone() else {
            if !behind || during {
                return;
            }
            if let Some(moved) = self.st.format_image.as_deref().filter(|m| older(&target, m)) {
                self.upgrade_note = Some(format!(
                    "upgrade refused: the family's data is in the format {moved} moved it to, which {target} (older) cannot open; set the Instances' image to {moved} or later"
                ));
                return;
            }
            let from = self.member(&primary).and_then(|m| m.set_image).map(str::to_owned);
            self.note(
                Subject::Family,
                false,
                "UpgradeStarted",
                format!(
                    "family {} moves from {} to {target}",
                    self.view.name,
                    from.as_deref().unwrap_or("?")
                ),
            );
            self.st.upgrade = Some(Upgrade {
                image: target,
                from_image: from,
                step: UP_PREPARING.into(),
                released: Vec::new(),
                format_upgraded: false,
                steps: vec![StepTime { step: UP_PREPARING.into(), at: ts(self.view.now) }],
            });
            return self.upgrade(Some(&primary), false);
        };
        self.out.busy = true;
        // The spec changed again during the upgrade. Back to where it came from, while the
        // format has not moved: the members roll back. Anything else waits until this upgrade
        // is done (each image opens only its own format and the one before, so images are
        // taken one at a time, in order).
        let mut aside = None;
        if up.image != target {
            let back = up.from_image.as_deref() == Some(target.as_str()) && !up.format_upgraded;
            if back && up.released.is_empty() && !during {
                self.st.upgrade = None;
                let message = format!("the upgrade to {} was called off before any member moved", up.image);
                self.note(Subject::Family, false, "UpgradeCancelled", message);
                return;
            }
            if back && !during {
                let message = format!("the upgrade to {} goes back to {target}", up.image);
                self.note(Subject::Family, false, "UpgradeReverting", message);
                if let Some(u) = self.st.upgrade.as_mut() {
                    u.image = target.clone();
                    u.released.clear();
                }
                self.upgrade_step(UP_SECONDARIES, None);
                return;
            }
            aside = Some(if up.format_upgraded && older(&target, &up.image) {
                format!(
                    "{target} cannot open the data any more (the upgrade to {} moved its format); set the Instances' image to {} or later",
                    up.image, up.image
                )
            } else {
                format!("{target} follows once the upgrade to {} is done", up.image)
            });
        }
        self.upgrade_steps(&primary, &up, during);
        if let Some(aside) = aside {
            self.upgrade_note = Some(match self.upgrade_note.take() {
                Some(n) => format!("{n}; {aside}"),
                None => aside,
            });
        }
    }

    /// The upgrade's steps, as far as they go in this reconcile.
    fn upgrade_steps(&mut self, primary: &str, up: &Upgrade, during: bool) {
        let primary = primary.to_owned();
        let image = up.image.clone();
        // A primary already on the new image in version-mismatch mode (made one by a failover
        // or a person's switchover before its turn) serves no client: its format moves now,
        // whatever the step.
        let current = self.st.primary.clone().unwrap_or_else(|| primary.clone());
        if let Some(pm) = self.member(&current)
            && pm.pod_image == Some(image.as_str())
            && pm.engine.is_some_and(|e| e.version_mismatch.is_some())
        {
            let step = self.st.upgrade.as_ref().map(|u| u.step.clone()).unwrap_or_default();
            if step == UP_PREPARING || step == UP_SECONDARIES {
                self.upgrade_step(
                    UP_FORMAT,
                    Some(format!("{UP_FORMAT} (from {step}: {current} is primary)")),
                );
            }
        }
        for _ in 0..5 {
            let Some(step) = self.st.upgrade.as_ref().map(|u| u.step.clone()) else { return };
            let primary = self.st.primary.clone().unwrap_or_else(|| primary.clone());
            if during && step != UP_PRIMARY && step != UP_FORMAT {
                return;
            }
            match step.as_str() {
                UP_PREPARING => match self.engine(&primary) {
                    Some(e) if e.upgrade_prepared => self.upgrade_step(UP_SECONDARIES, None),
                    Some(e) if writable(e) || e.role == "standalone" => {
                        self.act(Action::PrepareUpgrade { instance: primary.clone() });
                        return;
                    }
                    _ => {
                        let paused = self.member(&primary).is_some_and(|m| m.paused);
                        self.upgrade_note = Some(if paused {
                            format!(
                                "upgrade: waiting for the primary {primary}, which is paused (spec.paused)"
                            )
                        } else {
                            format!("upgrade: waiting for the primary {primary} to prepare its data")
                        });
                        return;
                    }
                },
                UP_SECONDARIES => {
                    let pending = self
                        .view
                        .members
                        .iter()
                        .find(|m| m.name != primary && !m.paused && !self.upgraded(m, &image, true));
                    let Some(m) = pending else {
                        self.upgrade_step(UP_PRIMARY, None);
                        continue;
                    };
                    let name = m.name.to_owned();
                    self.release(&name, &image);
                    let stuck_step = format!("Stuck: {name}");
                    let reported = up.steps.iter().any(|s| s.step == stuck_step);
                    if self.upgrade_age() >= self.view.timing.upgrade_step_deadline || reported {
                        let message = format!(
                            "upgrade stuck: {name} is not streaming on {image} after {}s — look at its pod and engine log; the upgrade goes on by itself once it streams, or goes back when the Instances' image is set to {}",
                            self.view.timing.upgrade_step_deadline.as_secs(),
                            up.from_image.as_deref().unwrap_or("the previous image")
                        );
                        if !reported {
                            self.note(Subject::Instance(name.clone()), true, "UpgradeStuck", message.clone());
                            self.upgrade_step(UP_SECONDARIES, Some(stuck_step));
                        }
                        self.upgrade_note = Some(message);
                    } else {
                        self.upgrade_note =
                            Some(format!("upgrade: {name} restarts on {image} and catches up"));
                    }
                    return;
                }
                UP_PRIMARY => {
                    let Some(pm) = self.member(&primary) else { return };
                    if pm.set_image == Some(image.as_str())
                        && pm.pod_image == Some(image.as_str())
                        && pm.engine.is_some()
                    {
                        self.upgrade_step(UP_FORMAT, None);
                        continue;
                    }
                    if during {
                        return;
                    }
                    let (supervised, restart) = (pm.supervised, pm.restart);
                    let secondaries: Vec<&MemberView<'a>> =
                        self.view.members.iter().filter(|m| m.name != primary && !m.paused).collect();
                    let ready: Option<String> = secondaries
                        .iter()
                        .filter(|m| self.upgraded(m, &image, true))
                        .max_by_key(|m| (m.engine.map_or(0, |e| e.journal_seqno), std::cmp::Reverse(m.name)))
                        .map(|m| m.name.to_owned());
                    // In place: when asked to, or when there is no secondary to move the role to.
                    if restart || secondaries.is_empty() {
                        self.release(&primary, &image);
                        self.upgrade_note = Some(format!(
                            "upgrade: the primary {primary} restarts on {image} (writes stop meanwhile)"
                        ));
                        return;
                    }
                    let Some(to) = ready else {
                        // A secondary stopped streaming since its turn (a restart, a network
                        // blip): the role moves only to one that streams.
                        self.out.busy = false;
                        self.upgrade_note = Some(format!(
                            "upgrade: waiting for a secondary on {image} to stream before the primary role moves"
                        ));
                        return;
                    };
                    if supervised {
                        self.out.busy = false;
                        self.upgrade_note = Some(format!(
                            "upgrade: the secondaries run {image}; waiting for a person to move the primary role (primaryUpdateStrategy: supervised): kubectl strand switchover {} --to {to}",
                            self.view.name
                        ));
                        return;
                    }
                    // After an aborted switchover of this upgrade the next try waits a step
                    // deadline (writes stop during each try), with a warning once per abort; a
                    // person may switch over or go back meanwhile.
                    let reason = format!("upgrade to {image}");
                    let since =
                        up.steps.iter().rev().find(|s| s.step == UP_PRIMARY).and_then(|s| stamp(&s.at));
                    let failed = self.st.history.iter().rev().find(|r| {
                        r.kind == SWITCHOVER
                            && r.reason == reason
                            && r.outcome != "Succeeded"
                            && r.steps.last().and_then(|s| stamp(&s.at)) >= since
                    });
                    if let Some(record) = failed {
                        let ended = record.steps.last().map(|s| s.at.clone()).unwrap_or_default();
                        let wait = self.view.timing.upgrade_step_deadline;
                        if elapsed_since(self.view.now, &ended) < wait {
                            let message = format!(
                                "upgrade: its switchover to {} was {} ({}); it tries again {}s after, or move the primary role with `kubectl strand switchover {} --to {to}`, or go back by setting the Instances' image to {}",
                                record.to.as_deref().unwrap_or("?"),
                                record.outcome.to_lowercase(),
                                record.message.as_deref().unwrap_or("no reason given"),
                                wait.as_secs(),
                                self.view.name,
                                up.from_image.as_deref().unwrap_or("the previous image")
                            );
                            let stuck_step = format!("Stuck: switchover {ended}");
                            if !up.steps.iter().any(|s| s.step == stuck_step) {
                                self.note(Subject::Family, true, "UpgradeStuck", message.clone());
                                if let Some(u) = self.st.upgrade.as_mut() {
                                    u.steps.push(StepTime { step: stuck_step, at: ts(self.view.now) });
                                }
                            }
                            self.out.busy = false;
                            self.upgrade_note = Some(message);
                            return;
                        }
                    }
                    self.begin(SWITCHOVER, &primary, Some(&to), reason, false);
                    return;
                }
                UP_FORMAT => match self.engine(&primary) {
                    Some(e) if e.version_mismatch.is_some() || e.format_version < e.binary_format_version => {
                        self.act(Action::UpgradeFormat { instance: primary.clone() });
                        if let Some(u) = self.st.upgrade.as_mut() {
                            u.format_upgraded = true;
                        }
                        self.st.format_image = Some(image.clone());
                        return;
                    }
                    Some(_) => self.upgrade_step(UP_FINISHING, None),
                    None => {
                        self.upgrade_note =
                            Some(format!("upgrade: waiting for the primary {primary} to answer"));
                        return;
                    }
                },
                UP_FINISHING => {
                    // A primary that has not the new format (one failed over to since):
                    // the format step again, on it.
                    if self.engine(&primary).is_some_and(|e| e.version_mismatch.is_some()) {
                        self.upgrade_step(UP_FORMAT, None);
                        continue;
                    }
                    return self.upgrade_finish(&image);
                }
                _ => return,
            }
        }
    }

    /// The last upgrade step: the members not on the new image yet (the old primary) roll
    /// onto it and replay the format upgrade; then the upgrade goes into the history.
    fn upgrade_finish(&mut self, image: &str) {
        let rest: Vec<String> = self
            .view
            .members
            .iter()
            .filter(|m| !m.paused && m.set_image != Some(image))
            .map(|m| m.name.to_owned())
            .collect();
        for m in &rest {
            self.release(m, image);
        }
        let waiting: Vec<&str> = self
            .view
            .members
            .iter()
            .filter(|m| !m.paused)
            .filter(|m| {
                !self.upgraded(m, image, false) || m.engine.is_some_and(|e| e.version_mismatch.is_some())
            })
            .map(|m| m.name)
            .collect();
        if !waiting.is_empty() {
            self.upgrade_note = Some(format!(
                "upgrade: waiting for {} to run {image} and replay the format upgrade",
                waiting.join(", ")
            ));
            return;
        }
        let Some(u) = self.st.upgrade.take() else { return };
        let mut steps = u.steps;
        steps.push(StepTime { step: "Done".into(), at: ts(self.view.now) });
        let reverted = u.from_image.as_deref() == Some(u.image.as_str());
        self.st.history.push(ProcedureRecord {
            kind: "Upgrade".into(),
            from: u.from_image,
            to: Some(u.image.clone()),
            term: self.st.term,
            outcome: if reverted { "Reverted" } else { "Succeeded" }.into(),
            reason: "the Instances' image changed".into(),
            message: None,
            steps,
        });
        let excess = self.st.history.len().saturating_sub(HISTORY_MAX);
        self.st.history.drain(..excess);
        let message = format!("family {} runs {} on its new format", self.view.name, u.image);
        self.note(Subject::Family, false, "UpgradeDone", message);
        self.out.busy = false;
    }

    // ---- steady state ----

    /// Brings every stream in line with `root` as the primary: its lease, each member
    /// receiving from its parent on the way to it, SI streams from it, nothing else.
    fn converge(&mut self, root: &str, edges: &[BcEdge]) {
        let procedure_running = self.st.procedure.as_ref().is_some_and(|p| p.step != REPOINTING);
        // The member being promoted is left alone until it is primary.
        let promoting = self.st.procedure.as_ref().filter(|p| p.step == PROMOTING).and_then(|p| p.to.clone());
        let term = self.st.term;
        let tree = topology::parents(root, &edges.iter().collect::<Vec<_>>());
        let links_by_name: BTreeMap<&str, &LinkView<'a>> =
            self.view.links.iter().map(|l| (l.name, l)).collect();

        // A founder whose promotion did not take (the call failed, or the operator stopped
        // right after recording it) is promoted again — it never was anything else.
        if !procedure_running
            && let Some(e) = self.engine(root)
            && e.role == "standalone"
            && e.term < term
            && !self.view.members.iter().any(|m| m.engine.is_some_and(writable))
        {
            self.act(Action::Promote { instance: root.to_owned(), term, lease: true });
            self.act(Action::Lease { instance: root.to_owned(), term });
        }
        // The primary keeps its lease (not while a procedure is replacing it), paused or not: a
        // paused instance is left as it is, and renewing its role is leaving it as it is.
        if !procedure_running
            && let Some(e) = self.member(root).and_then(|m| m.engine)
            && writable(e)
        {
            if e.term < term {
                self.act(Action::Promote { instance: root.to_owned(), term, lease: true });
            }
            if e.term <= term
                && !self
                    .out
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Lease { instance, .. } if instance == root))
            {
                self.act(Action::Lease { instance: root.to_owned(), term });
            }
        }

        // Every other member receives BC from its parent. Streams to start are held back until
        // the streams that no longer fit are stopped (below), so no member ever relays a
        // moment longer than needed.
        let mut starts: Vec<Action> = Vec::new();
        let mut wanted: BTreeMap<(String, String), ()> = BTreeMap::new();
        for m in &self.view.members {
            if m.name == root {
                continue;
            }
            if promoting.as_deref() == Some(m.name) {
                // Keep its stream in `wanted` (no stray stop) until it is primary.
                if let Some((parent, _)) = tree.get(m.name) {
                    wanted.insert((parent.clone(), m.name.to_owned()), ());
                }
                continue;
            }
            let Some((_, link)) = tree.get(m.name) else { continue };
            let Some(l) = links_by_name.get(link.as_str()) else { continue };
            let parent = &self.source_for(m.name, root, &tree);
            let mut report = LinkReport {
                current_source: Some(parent.clone()),
                current_target: Some(m.name.to_owned()),
                ..Default::default()
            };
            if m.paused {
                report.state = "Paused".into();
                report.reason = Some(format!("Instance {} is paused", m.name));
                self.out.links.insert(link.clone(), report);
                wanted.insert((parent.clone(), m.name.to_owned()), ());
                continue;
            }
            let Some(e) = m.engine else {
                report.state = "Unreachable".into();
                report.reason = Some(format!("{}'s engine does not answer", m.name));
                self.out.links.insert(link.clone(), report);
                wanted.insert((parent.clone(), m.name.to_owned()), ());
                continue;
            };
            if writable(e) && e.term > term {
                // Adoption handles it next step.
                continue;
            }
            if writable(e) {
                // A deposed primary (or a standalone instance joining): read-only first.
                if !procedure_running
                    || self.st.procedure.as_ref().and_then(|p| p.from.as_deref()) != Some(m.name)
                {
                    self.act(Action::Demote { instance: m.name.to_owned(), term });
                    self.note(
                        Subject::Instance(m.name.to_owned()),
                        false,
                        "Rejoining",
                        format!(
                            "{} rejoins family {} as a secondary of {parent} (term {term})",
                            m.name, self.view.name
                        ),
                    );
                } else {
                    continue;
                }
            }
            // Allowed to be seeded wherever the binary can be: a member the source's journal no
            // longer reaches (new, or left behind a retention limit) takes a snapshot instead
            // of waiting for a person; one that holds transactions the source lacks still
            // rolls back (autorollback) or is refused first.
            let seed = e.features.iter().any(|f| f == "seed");
            let receiver_ok = e.receiver.as_ref().is_some_and(|r| {
                !r.si && r.autorollback == l.spec.autorollback && !r.noresync && r.seed == seed
            });
            if !receiver_ok || e.term < term || writable(e) {
                self.act(Action::ReceiverStart {
                    instance: m.name.to_owned(),
                    si: false,
                    autorollback: l.spec.autorollback,
                    noresync: false,
                    seed,
                    updateresync: None,
                    updateresync_from: None,
                    term: Some(term),
                });
            }
            if l.spec.paused {
                report.state = "Paused".into();
                report.reason = Some("spec.paused: the stream is stopped".into());
                self.out.links.insert(link.clone(), report);
                continue;
            }
            wanted.insert((parent.clone(), m.name.to_owned()), ());
            let (Some(pe), Some(addr)) = (self.engine(parent), m.repl_addr) else {
                report.state = "Connecting".into();
                report.reason = Some(format!("waiting for {parent}'s engine"));
                self.out.links.insert(link.clone(), report);
                continue;
            };
            // Moving the stream to another source happens in two steps: the old one is stopped
            // (by the stray rule below) and the new one starts only once nothing streams to the
            // member, so it cannot have moved ahead of its new source meanwhile.
            let elsewhere = self
                .view
                .members
                .iter()
                .filter(|x| x.name != parent.as_str())
                .filter_map(|x| self.engine(x.name).map(|xe| (x.name, xe)))
                .any(|(_, xe)| xe.source_to(m.name).is_some_and(|s| !s.si && s.state != "stopped"));
            if elsewhere {
                report.state = "Connecting".into();
                report.reason = Some(format!("moving the stream to come from {parent}"));
                self.out.links.insert(link.clone(), report);
                continue;
            }
            let receiver_error = e.receiver.as_ref().and_then(|r| r.last_error.clone());
            stream(&mut starts, &mut report, (parent, pe), m.name, addr, false, receiver_error);
            // Its binary cannot apply the upgrade record: it waits for its turn in the upgrade.
            if let Some(up) = self.st.upgrade.as_ref().filter(|u| u.format_upgraded)
                && report.state == "Connecting"
                && !self.upgraded(m, &up.image, false)
            {
                report.state = "AwaitingUpgrade".into();
                report.reason = Some(format!(
                    "{} replays the format upgrade once it runs {} (its turn in the family's upgrade)",
                    m.name, up.image
                ));
            }
            self.out.links.insert(link.clone(), report);
        }

        // SI streams from the primary to each target family's primary.
        for l in self.si_links() {
            let peer = self.view.si_peers.get(l.name);
            let mut report = LinkReport {
                current_source: Some(root.to_owned()),
                current_target: peer.map(|p| p.name.to_owned()),
                ..Default::default()
            };
            if l.deleting {
                continue; // release_deleted_links
            }
            if l.spec.paused {
                report.state = "Paused".into();
                report.reason = Some("spec.paused: the stream is stopped".into());
                self.out.links.insert(l.name.to_owned(), report);
                continue;
            }
            let Some(peer) = peer else {
                report.state = "Connecting".into();
                report.reason =
                    Some(format!("waiting for the family of {} to have a primary", l.spec.target));
                self.out.links.insert(l.name.to_owned(), report);
                continue;
            };
            wanted.insert((root.to_owned(), peer.name.to_owned()), ());
            let (Some(pe), Some(te), Some(addr)) = (self.engine(root), peer.engine, peer.repl_addr) else {
                report.state = "Connecting".into();
                report.reason = Some(format!("waiting for the engines of {root} and {}", peer.name));
                self.out.links.insert(l.name.to_owned(), report);
                continue;
            };
            if te.role != "supplementary-primary" {
                report.state = "Connecting".into();
                report.reason =
                    Some(format!("waiting for {} to be its family's supplementary primary", peer.name));
                self.out.links.insert(l.name.to_owned(), report);
                continue;
            }
            if procedure_running {
                // The SI stream moves once the new primary is in place.
                report.state = "Connecting".into();
                report.reason = Some("waiting for the family's switchover or failover".into());
                self.out.links.insert(l.name.to_owned(), report);
                continue;
            }
            // A target without the family's stream joins it: from the backup spec.updateresync
            // names; else, while the source holds nothing, from its history; else from the
            // source's snapshot, where both binaries can (the receiver asks for it while it
            // holds nothing of its own, and the link shows Seeding). A target holding data of
            // its own (its own transactions, or another family's stream) needs the backup.
            let family = pe.family().unwrap_or(root).to_owned();
            let needs_stream = !te.has_stream_from(&family);
            let backup = l.spec.updateresync.is_some();
            let from_empty_source = needs_stream && !backup && pe.journal_seqno == 0;
            let can_seed = [te, pe].iter().all(|e| e.features.iter().any(|f| f == "seed-si"));
            let seed = needs_stream && !backup && !from_empty_source;
            let holds_data = te.streams.iter().any(|s| s.seqno > 0);
            let blocked = if !seed {
                None
            } else if !can_seed {
                Some(format!(
                    "{root} already holds transactions and {}'s or {root}'s binary cannot seed an SI stream from a snapshot",
                    te.name
                ))
            } else if holds_data {
                Some(format!("{} holds data of its own, which a snapshot of {root} would replace", te.name))
            } else {
                None
            };
            if let Some(why) = blocked {
                report.state = "Blocked".into();
                report.reason = Some(format!(
                    "{} has no history for family {family}: {why}; set spec.updateresync to a backup of a member of that family loaded into {}",
                    te.name, te.name
                ));
                self.out.links.insert(l.name.to_owned(), report);
                continue;
            }
            // Once the stream exists the receiver's seed setting means nothing: not compared.
            let receiver_ok = te.receiver.as_ref().is_some_and(|r| {
                r.si && r.autorollback == l.spec.autorollback
                    && r.noresync == l.spec.noresync
                    && (!needs_stream || r.seed == seed)
            });
            // A backup or an empty source's history begins the stream at once; a snapshot does
            // once it is installed (the receiver as it is, meanwhile).
            if !receiver_ok || (needs_stream && !seed) {
                self.act(Action::ReceiverStart {
                    instance: te.name.clone(),
                    si: true,
                    autorollback: l.spec.autorollback,
                    noresync: l.spec.noresync,
                    seed,
                    updateresync: if needs_stream { l.spec.updateresync.clone() } else { None },
                    updateresync_from: if from_empty_source {
                        self.member(root).and_then(|m| m.repl_addr).map(str::to_owned)
                    } else {
                        None
                    },
                    term: None,
                });
            }
            let receiver_error = te.receiver.as_ref().and_then(|r| r.last_error.clone());
            if stream(&mut starts, &mut report, (root, pe), &te.name, addr, true, receiver_error) {
                report.stream = te.receiver.as_ref().and_then(|r| r.stream);
            }
            self.out.links.insert(l.name.to_owned(), report);
        }

        // Streams that no longer fit: a deposed primary still sourcing, a stream to a member
        // that now receives from elsewhere, SI to a target family's old primary.
        let members: BTreeSet<&str> = self.view.members.iter().map(|m| m.name).collect();
        let orphans: BTreeSet<&str> =
            members.iter().copied().filter(|m| *m != root && !tree.contains_key(*m)).collect();
        for m in &self.view.members {
            let Some(e) = self.engine(m.name) else { continue };
            for s in &e.sources {
                let fits = wanted.contains_key(&(m.name.to_owned(), s.receiver.clone()));
                // A member cut off by a deleted link is left to its new family, except the
                // stream across the deleted link itself.
                let leave =
                    orphans.contains(s.receiver.as_str()) && !self.crosses_deleted_link(m.name, &s.receiver);
                if !fits && !leave {
                    self.act(Action::SourceStop {
                        instance: m.name.to_owned(),
                        receiver: s.receiver.clone(),
                    });
                }
            }
        }
        for a in starts {
            self.act(a);
        }
        self.release_deleted_links(&tree);
    }

    /// Where member `m` receives from: its parent on the way to `root`, skipping members that
    /// are unavailable or behind `m` (a hub that died, or has come back and is still catching
    /// up), so the rest of the family keeps streaming from the next one up.
    fn source_for(&self, m: &str, root: &str, tree: &BTreeMap<String, (String, String)>) -> String {
        let own = self.engine(m).map(|e| e.journal_seqno);
        let mut at = tree.get(m).map(|(p, _)| p.clone()).unwrap_or_else(|| root.to_owned());
        while at != root {
            let ok =
                self.engine(&at).is_some_and(|e| !writable(e) && own.is_none_or(|s| e.journal_seqno >= s));
            if ok {
                break;
            }
            match tree.get(&at) {
                Some((up, _)) => at = up.clone(),
                None => return root.to_owned(),
            }
        }
        at
    }

    fn crosses_deleted_link(&self, a: &str, b: &str) -> bool {
        self.view.links.iter().any(|l| {
            l.deleting
                && ((l.spec.source == a && l.spec.target == b) || (l.spec.source == b && l.spec.target == a))
        })
    }

    /// Deleted links: stop what runs across them, then let them go once the engines show
    /// nothing runs (an engine that does not answer keeps the finalizer).
    fn release_deleted_links(&mut self, tree: &BTreeMap<String, (String, String)>) {
        let deleting: Vec<&LinkView<'a>> =
            self.view.links.iter().filter(|l| l.owned && l.deleting && l.blocked.is_none()).collect();
        for l in deleting {
            let mut waiting = Vec::new();
            // Who may still stream across it: both ends of a BC link; for SI, any member to the
            // target family's primary (or the named target).
            let (ends, receivers): (Vec<&str>, Vec<String>) = match l.spec.mode {
                Mode::Bc => (
                    vec![l.spec.source.as_str(), l.spec.target.as_str()],
                    vec![l.spec.source.clone(), l.spec.target.clone()],
                ),
                Mode::Si => (
                    self.view.members.iter().map(|m| m.name).collect(),
                    vec![self.view.si_peers.get(l.name).map_or(l.spec.target.clone(), |p| p.name.to_owned())],
                ),
            };
            for end in &ends {
                let Some(m) = self.member(end) else { continue }; // the Instance is gone
                if m.paused {
                    waiting.push(format!("{end} is paused"));
                    continue;
                }
                let Some(e) = m.engine else {
                    waiting.push(format!("{end}'s engine does not answer"));
                    continue;
                };
                for s in &e.sources {
                    let across = s.receiver != *end
                        && receivers.contains(&s.receiver)
                        && (s.si == (l.spec.mode == Mode::Si));
                    if across {
                        waiting.push(format!("{end} still streams to {}", s.receiver));
                        self.act(Action::SourceStop {
                            instance: (*end).to_owned(),
                            receiver: s.receiver.clone(),
                        });
                    }
                }
                // The receiving end of a BC link (not part of the family's tree any more)
                // stops receiving.
                if l.spec.mode == Mode::Bc
                    && !tree.contains_key(*end)
                    && self.st.primary.as_deref() != Some(*end)
                    && e.receiver.as_ref().is_some_and(|r| !r.si)
                    && !writable(e)
                {
                    waiting.push(format!("{end} still has a receiver"));
                    self.act(Action::ReceiverStop { instance: (*end).to_owned() });
                }
            }
            if l.spec.mode == Mode::Si
                && let Some(peer) = self.view.si_peers.get(l.name)
            {
                match peer.engine {
                    Some(te) if te.receiver.as_ref().is_some_and(|r| r.si) => {
                        waiting.push(format!("{} still has an SI receiver", peer.name));
                        self.act(Action::ReceiverStop { instance: peer.name.to_owned() });
                    }
                    Some(_) => {}
                    None => waiting.push(format!("{}'s engine does not answer", peer.name)),
                }
            }
            let report = LinkReport {
                state: "Deleting".into(),
                reason: (!waiting.is_empty()).then(|| waiting.join("; ")),
                ..Default::default()
            };
            // Released once every stop is observed done (a later step): never on a guess.
            if waiting.is_empty() {
                self.out.release.push(l.name.to_owned());
            }
            self.out.links.insert(l.name.to_owned(), report);
        }
    }

    fn phase(&mut self, root: &str) {
        if let Some(p) = &self.st.procedure {
            self.st.phase = Some(if p.kind == SWITCHOVER { "SwitchingOver" } else { "FailingOver" }.into());
            if self.st.phase.as_deref() == Some("FailingOver") && p.step == PROMOTING && p.to.is_none() {
                self.st.phase = Some("NoPrimary".into());
            }
            return;
        }
        let primary_ok = self.engine(root).is_some_and(|e| writable(e) && e.term == self.st.term);
        let links_ok =
            self.out.links.values().all(|r| {
                matches!(r.state.as_str(), "Streaming" | "CatchingUp" | "Paused" | "AwaitingUpgrade")
            });
        let members_ok = self.view.members.iter().all(|m| m.paused || m.engine.is_some());
        if !primary_ok {
            self.st.phase = Some("Degraded".into());
            if self.st.message.is_none() {
                self.st.message = Some(format!("primary {root} is not available"));
            }
        } else if links_ok && members_ok {
            self.st.phase = Some("Healthy".into());
            self.st.message = None;
        } else {
            self.st.phase = Some("Degraded".into());
            let down: Vec<&str> = self
                .view
                .members
                .iter()
                .filter(|m| !m.paused && m.engine.is_none())
                .map(|m| m.name)
                .collect();
            let links: Vec<String> = self
                .out
                .links
                .iter()
                .filter(|(_, r)| {
                    !matches!(r.state.as_str(), "Streaming" | "CatchingUp" | "Paused" | "AwaitingUpgrade")
                })
                .map(|(n, r)| format!("{n} {}", r.state))
                .collect();
            let mut parts = Vec::new();
            if !down.is_empty() {
                parts.push(format!("not answering: {}", down.join(", ")));
            }
            if !links.is_empty() {
                parts.push(format!("links: {}", links.join(", ")));
            }
            self.st.message = Some(parts.join("; "));
        }
    }
}

/// The stream `from → to` (at `addr`, BC or SI): started (held in `starts`) unless it already
/// runs there, otherwise reported from the source's status. Whether it runs.
fn stream(
    starts: &mut Vec<Action>,
    report: &mut LinkReport,
    (from, pe): (&str, &EngineStatus),
    to: &str,
    addr: &str,
    si: bool,
    receiver_error: Option<String>,
) -> bool {
    match pe.source_to(to).filter(|s| s.addr == addr && s.si == si && s.state != "stopped") {
        Some(s) => {
            fill_from_source(report, s, receiver_error);
            true
        }
        None => {
            starts.push(Action::SourceStart {
                instance: from.to_owned(),
                receiver: to.to_owned(),
                addr: addr.to_owned(),
                si,
            });
            report.state = "Connecting".into();
            false
        }
    }
}

fn fill_from_source(
    report: &mut LinkReport,
    s: &crate::engine_status::Source,
    receiver_error: Option<String>,
) {
    report.state = match s.state.as_str() {
        "streaming" if s.backlog == 0 => "Streaming",
        "streaming" => "CatchingUp",
        "rollback_required" => "RollbackRequired",
        "needs_reseed" => "ReseedRequired",
        "seeding" => "Seeding",
        _ => "Connecting",
    }
    .into();
    report.reason = s
        .last_error
        .clone()
        .or(receiver_error)
        .filter(|_| report.state != "Streaming" && report.state != "CatchingUp");
    report.backlog = Some(s.backlog);
    report.lag_seconds = Some(s.lag_seconds);
}

#[cfg(test)]
mod tests;
