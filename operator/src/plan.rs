//! Pure reconcile decisions for replication links: from a link's spec, every link in the
//! namespace and the engines' observed statuses, which admin calls to make and what state to
//! report. No I/O: the controller gathers the inputs, runs these, and carries out the actions.
//!
//! Each call is idempotent on the engine side and is planned only when the observed status
//! differs from what the link wants, so a reconcile repeated after a crash (or by a second
//! operator replica that just took the lease) plans nothing already done.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::crd::{Instance, Mode, ReplicationLink, ReplicationLinkSpec};
use crate::engine_status::EngineStatus;

/// Most outgoing streams one instance may source (the engine's limit, GT.M's sixteen).
pub const OUTGOING_MAX: usize = 16;
/// How a reason that only says an Instance is missing (yet) begins: a link may be applied
/// before its instances, so admission lets it through and the controller waits.
pub const MISSING_PREFIX: &str = "Instance ";

/// One engine admin call.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `POST /v1/promote`: become the family's originating primary (or supplementary primary).
    Promote { instance: String },
    /// `POST /v1/receiver/start`.
    ReceiverStart {
        instance: String,
        si: bool,
        autorollback: bool,
        noresync: bool,
        updateresync: Option<String>,
        /// Seed the SI stream from this family member, which holds nothing yet.
        updateresync_from: Option<String>,
    },
    /// `POST /v1/sources`.
    SourceStart { instance: String, receiver: String, addr: String, si: bool },
    /// `DELETE /v1/sources/{receiver}` (link deleted).
    SourceStop { instance: String, receiver: String },
    /// `POST /v1/receiver/stop` (link deleted).
    ReceiverStop { instance: String },
}

impl Action {
    /// The instance the call goes to.
    pub fn instance(&self) -> &str {
        match self {
            Action::Promote { instance }
            | Action::ReceiverStart { instance, .. }
            | Action::SourceStart { instance, .. }
            | Action::SourceStop { instance, .. }
            | Action::ReceiverStop { instance } => instance,
        }
    }

    /// Method, path and JSON body of the admin request.
    pub fn request(&self) -> (&'static str, String, Option<serde_json::Value>) {
        match self {
            Action::Promote { .. } => ("POST", "/v1/promote".into(), None),
            Action::ReceiverStart { si, autorollback, noresync, updateresync, updateresync_from, .. } => (
                "POST",
                "/v1/receiver/start".into(),
                Some(serde_json::json!({
                    "si": si, "autorollback": autorollback, "noresync": noresync,
                    "updateresync": updateresync, "updateresync_from": updateresync_from,
                })),
            ),
            Action::SourceStart { receiver, addr, si, .. } => (
                "POST",
                "/v1/sources".into(),
                Some(serde_json::json!({ "receiver": receiver, "addr": addr, "si": si })),
            ),
            Action::SourceStop { receiver, .. } => ("DELETE", format!("/v1/sources/{receiver}"), None),
            Action::ReceiverStop { .. } => ("POST", "/v1/receiver/stop".into(), None),
        }
    }
}

/// What a link reports (`status.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    CatchingUp,
    Streaming,
    RollbackRequired,
    Blocked,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "Connecting",
            LinkState::CatchingUp => "CatchingUp",
            LinkState::Streaming => "Streaming",
            LinkState::RollbackRequired => "RollbackRequired",
            LinkState::Blocked => "Blocked",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkPlan {
    pub actions: Vec<Action>,
    pub state: LinkState,
    pub reason: Option<String>,
    pub backlog: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub stream: Option<u8>,
}

impl LinkPlan {
    fn blocked(reason: String) -> Self {
        LinkPlan {
            actions: Vec::new(),
            state: LinkState::Blocked,
            reason: Some(reason),
            backlog: None,
            lag_seconds: None,
            stream: None,
        }
    }
}

/// A link as the namespace-wide checks see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRef<'a> {
    pub name: &'a str,
    pub spec: &'a ReplicationLinkSpec,
    /// Creation order (older links win a conflict): timestamp, then name.
    pub created: &'a str,
}

/// Rules that involve more than one object: SI only into a supplementary instance and only
/// from a non-supplementary one, BC only between instances of one kind, one SI link into an
/// instance, at most sixteen outgoing links per instance. Returns, per link that breaks one,
/// the reason it is blocked. `supplementary` maps Instance name → spec.supplementary.
pub fn check_links(
    links: &[LinkRef<'_>],
    supplementary: &BTreeMap<String, bool>,
) -> BTreeMap<String, String> {
    let mut blocked = BTreeMap::new();
    let mut ordered: Vec<&LinkRef<'_>> = links.iter().collect();
    ordered.sort_by(|a, b| (a.created, a.name).cmp(&(b.created, b.name)));
    let mut si_into: BTreeMap<&str, &str> = BTreeMap::new();
    let mut outgoing: BTreeMap<&str, usize> = BTreeMap::new();
    for link in ordered {
        let (source, target) = (link.spec.source.as_str(), link.spec.target.as_str());
        if outgoing.get(source).copied().unwrap_or(0) >= OUTGOING_MAX {
            blocked.insert(
                link.name.to_owned(),
                format!("{source} already sources {OUTGOING_MAX} links, the most an instance may"),
            );
            continue;
        }
        let (Some(&src_supp), Some(&tgt_supp)) = (supplementary.get(source), supplementary.get(target))
        else {
            let missing = if supplementary.contains_key(source) { target } else { source };
            blocked.insert(link.name.to_owned(), format!("{MISSING_PREFIX}{missing} does not exist"));
            // It still counts against its source's sixteen (it streams once the target exists).
            *outgoing.entry(source).or_default() += 1;
            continue;
        };
        let reason = match link.spec.mode {
            Mode::Si if !tgt_supp => {
                Some(format!("SI goes only into supplementary instances and {target} is not supplementary"))
            }
            Mode::Si if src_supp => {
                Some(format!("{source} is supplementary: it cannot source SI (it can source BC)"))
            }
            Mode::Si => si_into.get(target).map(|other| {
                format!(
                    "{target} already receives an SI stream through link {other}; an instance receives one"
                )
            }),
            Mode::Bc if src_supp != tgt_supp => Some(if src_supp {
                format!("{source} is supplementary; its BC streams go only to supplementary instances")
            } else {
                format!("{target} is supplementary; from {source} it can receive only an SI stream")
            }),
            Mode::Bc => None,
        };
        match reason {
            Some(reason) => {
                blocked.insert(link.name.to_owned(), reason);
            }
            None => {
                if link.spec.mode == Mode::Si {
                    si_into.insert(target, link.name);
                }
                *outgoing.entry(source).or_default() += 1;
            }
        }
    }
    blocked
}

/// [`check_links`] over the live links and the instances of a namespace, as stored. A
/// `candidate` (name, spec) not stored yet — or replacing the stored link of that name — is
/// checked as the newest link, so a conflict with an existing one is the candidate's fault.
pub fn check_namespace(
    links: &[ReplicationLink],
    instances: &[Instance],
    candidate: Option<(&str, &ReplicationLinkSpec)>,
) -> BTreeMap<String, String> {
    let supplementary: BTreeMap<String, bool> =
        instances.iter().map(|i| (i.name_any(), i.spec.supplementary)).collect();
    let replaced = candidate.map(|(name, _)| name);
    let live: Vec<(String, String, &ReplicationLinkSpec)> = links
        .iter()
        .filter(|l| l.metadata.deletion_timestamp.is_none())
        .map(|l| {
            let created = l.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            (l.name_any(), created, &l.spec)
        })
        .filter(|(name, _, _)| Some(name.as_str()) != replaced)
        .collect();
    let mut refs: Vec<LinkRef<'_>> =
        live.iter().map(|(name, created, spec)| LinkRef { name, spec, created }).collect();
    if let Some((name, spec)) = candidate {
        refs.push(LinkRef { name, spec, created: "~" });
    }
    check_links(&refs, &supplementary)
}

/// The inputs for one link whose namespace-wide checks passed.
#[derive(Debug, Clone)]
pub struct LinkView<'a> {
    pub spec: &'a ReplicationLinkSpec,
    pub source: &'a EngineStatus,
    pub target: &'a EngineStatus,
    /// Where the target's replication listener is reachable (pod IP : repl port).
    pub target_repl_addr: &'a str,
    /// Where the source's replication listener is reachable (to seed an SI stream from it).
    pub source_repl_addr: &'a str,
    /// Whether the source is itself the target of a BC link (then it must not be promoted).
    pub source_receives_bc: bool,
}

/// The admin calls that bring the two engines to what the link wants, and the state to report.
pub fn plan_link(v: &LinkView<'_>) -> LinkPlan {
    let (spec, source, target) = (v.spec, v.source, v.target);
    let si = spec.mode == Mode::Si;
    let mut actions = Vec::new();

    // The target's receiver.
    let receiving = target.receiver.as_ref();
    let wants_noresync = si && spec.noresync;
    let receiver_matches = receiving
        .is_some_and(|r| r.si == si && r.autorollback == spec.autorollback && r.noresync == wants_noresync);
    if si {
        if target.role == "secondary" {
            return LinkPlan::blocked(format!(
                "{} is a BC replicating secondary; it takes an SI stream only once promoted",
                target.name
            ));
        }
    } else if matches!(target.role.as_str(), "primary" | "supplementary-primary") {
        return LinkPlan::blocked(format!(
            "{} is an originating primary; make it a secondary with a switchover, not by a link",
            target.name
        ));
    }
    let family = source.family().unwrap_or(source.name.as_str());
    let needs_seed = si && !target.has_stream_from(family);
    // Without a backup, a source that holds nothing yet can seed the stream itself.
    let seed_from_source = needs_seed && spec.updateresync.is_none() && source.journal_seqno == 0;
    if needs_seed && spec.updateresync.is_none() && !seed_from_source {
        return LinkPlan::blocked(format!(
            "{} has no history for family {family} and {} already holds transactions; set spec.updateresync to a backup of a member of that family loaded into {}",
            target.name, source.name, target.name
        ));
    }
    if !receiver_matches || needs_seed {
        actions.push(Action::ReceiverStart {
            instance: target.name.clone(),
            si,
            autorollback: spec.autorollback,
            noresync: wants_noresync,
            updateresync: if needs_seed { spec.updateresync.clone() } else { None },
            updateresync_from: seed_from_source.then(|| v.source_repl_addr.to_owned()),
        });
    }

    // The source: an originating primary unless it receives BC itself (a propagating one).
    if source.role == "standalone" && !v.source_receives_bc {
        actions.push(Action::Promote { instance: source.name.clone() });
    }
    let outgoing = source.source_to(&target.name);
    if !outgoing.is_some_and(|s| s.addr == v.target_repl_addr && s.si == si && s.state != "stopped") {
        actions.push(Action::SourceStart {
            instance: source.name.clone(),
            receiver: target.name.clone(),
            addr: v.target_repl_addr.to_owned(),
            si,
        });
    }

    let stream = receiving.and_then(|r| r.stream);
    let (state, reason, backlog, lag) = match outgoing {
        Some(s) if actions.is_empty() => {
            let state = match s.state.as_str() {
                "streaming" if s.backlog == 0 => LinkState::Streaming,
                "streaming" => LinkState::CatchingUp,
                "rollback_required" => LinkState::RollbackRequired,
                _ => LinkState::Connecting,
            };
            (state, s.last_error.clone(), Some(s.backlog), Some(s.lag_seconds))
        }
        _ => (LinkState::Connecting, None, None, None),
    };
    LinkPlan { actions, state, reason, backlog, lag_seconds: lag, stream }
}

/// The calls that end a deleted link: stop the source's stream and the target's receiver
/// (the target keeps its data and role; it is no longer fed).
pub fn plan_link_removal(
    spec: &ReplicationLinkSpec,
    source: Option<&EngineStatus>,
    target: Option<&EngineStatus>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if let Some(source) = source
        && source.source_to(&spec.target).is_some()
    {
        actions.push(Action::SourceStop { instance: source.name.clone(), receiver: spec.target.clone() });
    }
    if let Some(target) = target
        && target.receiver.is_some()
    {
        actions.push(Action::ReceiverStop { instance: target.name.clone() });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine_status::{History, Receiver, Source, Stream};

    fn engine(name: &str, role: &str, supplementary: bool) -> EngineStatus {
        EngineStatus {
            name: name.into(),
            role: role.into(),
            supplementary,
            history: vec![History { start_seqno: 1, root_name: name.into() }],
            ..Default::default()
        }
    }

    fn spec(source: &str, target: &str, mode: Mode) -> ReplicationLinkSpec {
        ReplicationLinkSpec {
            source: source.into(),
            target: target.into(),
            mode,
            autorollback: false,
            noresync: false,
            updateresync: None,
        }
    }

    fn view<'a>(
        spec: &'a ReplicationLinkSpec,
        source: &'a EngineStatus,
        target: &'a EngineStatus,
    ) -> LinkView<'a> {
        LinkView {
            spec,
            source,
            target,
            target_repl_addr: "10.0.0.2:7070",
            source_repl_addr: "10.0.0.1:7070",
            source_receives_bc: false,
        }
    }

    #[test]
    fn a_new_bc_pair_promotes_starts_the_receiver_and_the_source() {
        let s = spec("ardmore", "brynmawr", Mode::Bc);
        let (a, b) = (engine("ardmore", "standalone", false), engine("brynmawr", "standalone", false));
        let plan = plan_link(&view(&s, &a, &b));
        assert_eq!(
            plan.actions,
            vec![
                Action::ReceiverStart {
                    instance: "brynmawr".into(),
                    si: false,
                    autorollback: false,
                    noresync: false,
                    updateresync: None,
                    updateresync_from: None
                },
                Action::Promote { instance: "ardmore".into() },
                Action::SourceStart {
                    instance: "ardmore".into(),
                    receiver: "brynmawr".into(),
                    addr: "10.0.0.2:7070".into(),
                    si: false
                },
            ]
        );
        assert_eq!(plan.state, LinkState::Connecting);
    }

    #[test]
    fn a_converged_pair_plans_nothing_and_reports_the_stream() {
        let s = spec("ardmore", "brynmawr", Mode::Bc);
        let mut a = engine("ardmore", "primary", false);
        let mut b = engine("brynmawr", "secondary", false);
        b.receiver = Some(Receiver { state: "streaming".into(), ..Default::default() });
        a.sources = vec![Source {
            receiver: "brynmawr".into(),
            addr: "10.0.0.2:7070".into(),
            state: "streaming".into(),
            backlog: 3,
            lag_seconds: 0.2,
            ..Default::default()
        }];
        let plan = plan_link(&view(&s, &a, &b));
        assert!(plan.actions.is_empty(), "{plan:?}");
        assert_eq!((plan.state, plan.backlog), (LinkState::CatchingUp, Some(3)));
        a.sources[0].backlog = 0;
        assert_eq!(plan_link(&view(&s, &a, &b)).state, LinkState::Streaming);
        a.sources[0].state = "rollback_required".into();
        a.sources[0].last_error = Some("brynmawr holds seqnos 99..=99".into());
        let plan = plan_link(&view(&s, &a, &b));
        assert_eq!(plan.state, LinkState::RollbackRequired);
        assert!(plan.reason.unwrap().contains("99..=99"));
        // The target's pod moved: the source is pointed at the new address.
        a.sources[0].state = "streaming".into();
        let moved = LinkView { target_repl_addr: "10.0.0.9:7070", ..view(&s, &a, &b) };
        assert!(
            matches!(&plan_link(&moved).actions[..], [Action::SourceStart { addr, .. }] if addr == "10.0.0.9:7070")
        );
    }

    #[test]
    fn a_propagating_primary_is_not_promoted_and_a_primary_target_blocks() {
        let s = spec("brynmawr", "oxford", Mode::Bc);
        let (b, o) = (engine("brynmawr", "standalone", false), engine("oxford", "standalone", false));
        let v = LinkView { source_receives_bc: true, ..view(&s, &b, &o) };
        assert!(!plan_link(&v).actions.iter().any(|a| matches!(a, Action::Promote { .. })));
        let o = engine("oxford", "primary", false);
        let plan = plan_link(&view(&s, &b, &o));
        assert_eq!(plan.state, LinkState::Blocked);
        assert!(plan.reason.unwrap().contains("oxford is an originating primary"));
    }

    #[test]
    fn si_needs_a_seed_once_then_streams() {
        let mut s = spec("ardmore", "malvern", Mode::Si);
        let mut a = engine("ardmore", "primary", false);
        let mut m = engine("malvern", "standalone", true);
        // A source that holds nothing yet seeds the stream itself.
        let plan = plan_link(&view(&s, &a, &m));
        assert!(
            matches!(&plan.actions[0], Action::ReceiverStart { updateresync_from: Some(addr), .. } if addr == "10.0.0.1:7070"),
            "{plan:?}"
        );
        a.journal_seqno = 5;
        let plan = plan_link(&view(&s, &a, &m));
        assert_eq!(plan.state, LinkState::Blocked);
        assert!(plan.reason.unwrap().contains("set spec.updateresync"));
        s.updateresync = Some("/data/ardmore.backup".into());
        s.noresync = true;
        let plan = plan_link(&view(&s, &a, &m));
        assert_eq!(
            plan.actions[0],
            Action::ReceiverStart {
                instance: "malvern".into(),
                si: true,
                autorollback: false,
                noresync: true,
                updateresync: Some("/data/ardmore.backup".into()),
                updateresync_from: None
            }
        );
        // Seeded: the receiver is restarted without the backup only if its flags differ.
        m.streams = vec![Stream { stream: 1, source_family: Some("ardmore".into()), seqno: 10 }];
        m.receiver = Some(Receiver { si: true, noresync: true, ..Default::default() });
        m.role = "supplementary-primary".into();
        let plan = plan_link(&view(&s, &a, &m));
        assert!(!plan.actions.iter().any(|a| matches!(a, Action::ReceiverStart { .. })), "{plan:?}");
        m.role = "secondary".into();
        assert!(plan_link(&view(&s, &a, &m)).reason.unwrap().contains("only once promoted"));
    }

    #[test]
    fn namespace_rules_block_the_later_link_with_a_reason() {
        let supp: BTreeMap<String, bool> =
            [("ardmore", false), ("brynmawr", false), ("malvern", true), ("newtown", true)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
        let si_a = spec("ardmore", "malvern", Mode::Si);
        let si_b = spec("brynmawr", "malvern", Mode::Si);
        let si_bad = spec("ardmore", "brynmawr", Mode::Si);
        let si_from_supp = spec("malvern", "newtown", Mode::Si);
        let bc_cross = spec("ardmore", "newtown", Mode::Bc);
        let missing = spec("ardmore", "nobody", Mode::Bc);
        let links = [
            LinkRef { name: "a-m", spec: &si_a, created: "2026-01-01T00:00:00Z" },
            LinkRef { name: "b-m", spec: &si_b, created: "2026-01-02T00:00:00Z" },
            LinkRef { name: "bad", spec: &si_bad, created: "2026-01-01T00:00:00Z" },
            LinkRef { name: "supp", spec: &si_from_supp, created: "2026-01-01T00:00:00Z" },
            LinkRef { name: "cross", spec: &bc_cross, created: "2026-01-01T00:00:00Z" },
            LinkRef { name: "missing", spec: &missing, created: "2026-01-01T00:00:00Z" },
        ];
        let blocked = check_links(&links, &supp);
        assert!(!blocked.contains_key("a-m"));
        assert!(blocked["b-m"].contains("already receives an SI stream through link a-m"));
        assert!(blocked["bad"].contains("brynmawr is not supplementary"));
        assert!(blocked["supp"].contains("malvern is supplementary: it cannot source SI"));
        assert!(
            blocked["cross"]
                .contains("newtown is supplementary; from ardmore it can receive only an SI stream")
        );
        assert!(blocked["missing"].contains("Instance nobody does not exist"));

        let specs: Vec<ReplicationLinkSpec> =
            (0..17).map(|i| spec("ardmore", &format!("t{i}"), Mode::Bc)).collect();
        let mut supp = supp;
        for i in 0..17 {
            supp.insert(format!("t{i}"), false);
        }
        let names: Vec<String> = (0..17).map(|i| format!("l{i:02}")).collect();
        let links: Vec<LinkRef<'_>> = specs
            .iter()
            .zip(&names)
            .map(|(spec, name)| LinkRef { name, spec, created: "2026-01-01T00:00:00Z" })
            .collect();
        let blocked = check_links(&links, &supp);
        assert_eq!(blocked.len(), 1);
        assert!(blocked["l16"].contains("already sources 16 links"));
    }

    #[test]
    fn removal_stops_what_runs() {
        let s = spec("ardmore", "brynmawr", Mode::Bc);
        let mut a = engine("ardmore", "primary", false);
        a.sources = vec![Source { receiver: "brynmawr".into(), ..Default::default() }];
        let mut b = engine("brynmawr", "secondary", false);
        b.receiver = Some(Receiver::default());
        assert_eq!(
            plan_link_removal(&s, Some(&a), Some(&b)),
            vec![
                Action::SourceStop { instance: "ardmore".into(), receiver: "brynmawr".into() },
                Action::ReceiverStop { instance: "brynmawr".into() },
            ]
        );
        assert!(plan_link_removal(&s, None, None).is_empty());
    }
}
