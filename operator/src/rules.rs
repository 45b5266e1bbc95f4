//! Rules about links that involve more than one object, checked by the admission webhook at
//! apply time and again by the controllers (a link that got past the webhook is blocked with
//! the reason). Pure: no I/O.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::crd::{Instance, Mode, ReplicationLink, ReplicationLinkSpec};

/// Most outgoing streams one instance may source (the engine's limit, GT.M's sixteen).
pub const OUTGOING_MAX: usize = 16;
/// How a reason that only says an Instance is missing (yet) begins: a link may be applied
/// before its instances, so admission lets it through and the controller waits.
pub const MISSING_PREFIX: &str = "Instance ";

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
/// instance, at most sixteen outgoing links per instance, and BC links forming a tree (one BC
/// link into an instance, no cycle: the stream along each link flows away from the family's
/// current primary, so every member needs exactly one way to it). Returns, per link that
/// breaks one, the reason it is blocked. `supplementary` maps Instance name →
/// spec.supplementary.
pub fn check_links(
    links: &[LinkRef<'_>],
    supplementary: &BTreeMap<String, bool>,
) -> BTreeMap<String, String> {
    let mut blocked = BTreeMap::new();
    let mut ordered: Vec<&LinkRef<'_>> = links.iter().collect();
    ordered.sort_by(|a, b| (a.created, a.name).cmp(&(b.created, b.name)));
    let mut si_into: BTreeMap<&str, &str> = BTreeMap::new();
    let mut bc_into: BTreeMap<&str, &str> = BTreeMap::new();
    let mut outgoing: BTreeMap<&str, usize> = BTreeMap::new();
    let mut joined = UnionFind::default();
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
            Mode::Bc => match bc_into.get(target) {
                Some(other) => Some(format!(
                    "{target} already receives a BC stream through link {other}; an instance receives one"
                )),
                None if joined.same(source, target) => Some(format!(
                    "{source} and {target} are already one family through other BC links; BC links must form a tree"
                )),
                None => None,
            },
        };
        match reason {
            Some(reason) => {
                blocked.insert(link.name.to_owned(), reason);
            }
            None => {
                if link.spec.mode == Mode::Si {
                    si_into.insert(target, link.name);
                } else {
                    bc_into.insert(target, link.name);
                    joined.union(source, target);
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
    links: &[&ReplicationLink],
    instances: &[&Instance],
    candidate: Option<(&str, &ReplicationLinkSpec)>,
) -> BTreeMap<String, String> {
    let supplementary: BTreeMap<String, bool> =
        instances.iter().map(|i| (i.name_any(), i.spec.supplementary)).collect();
    let replaced = candidate.map(|(name, _)| name);
    let live: Vec<(String, String, &ReplicationLinkSpec)> = links
        .iter()
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

/// Union-find over instance names (for the tree rule and family components).
#[derive(Debug, Default)]
pub struct UnionFind {
    parent: BTreeMap<String, String>,
}

impl UnionFind {
    pub fn find(&mut self, x: &str) -> String {
        let mut root = x.to_owned();
        while let Some(p) = self.parent.get(&root).filter(|p| **p != root) {
            root = p.clone();
        }
        // Path compression.
        let mut cur = x.to_owned();
        while let Some(p) = self.parent.get(&cur).cloned().filter(|p| *p != cur) {
            self.parent.insert(cur, root.clone());
            cur = p;
        }
        root
    }

    pub fn union(&mut self, a: &str, b: &str) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The smaller name is the representative, so the outcome does not depend on order.
            let (keep, other) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent.insert(other, keep);
        }
    }

    pub fn same(&mut self, a: &str, b: &str) -> bool {
        self.find(a) == self.find(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: &str, target: &str, mode: Mode) -> ReplicationLinkSpec {
        ReplicationLinkSpec {
            source: source.into(),
            target: target.into(),
            mode,
            autorollback: false,
            noresync: false,
            updateresync: None,
            paused: false,
        }
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
    fn bc_links_must_form_a_tree() {
        let supp: BTreeMap<String, bool> =
            ["a", "b", "c", "d"].into_iter().map(|k| (k.to_owned(), false)).collect();
        let specs = [
            spec("a", "b", Mode::Bc),
            spec("b", "c", Mode::Bc),
            spec("c", "a", Mode::Bc), // closes a cycle
            spec("d", "c", Mode::Bc), // c already receives from b
            spec("a", "d", Mode::Bc), // fine: d's first BC link in
        ];
        let names = ["ab", "bc", "ca", "dc", "ad"];
        let links: Vec<LinkRef<'_>> = specs
            .iter()
            .zip(names)
            .map(|(spec, name)| LinkRef { name, spec, created: "2026-01-01T00:00:00Z" })
            .collect();
        let blocked = check_links(&links, &supp);
        assert_eq!(blocked.keys().collect::<Vec<_>>(), ["ca", "dc"]);
        assert!(blocked["ca"].contains("must form a tree"), "{}", blocked["ca"]);
        assert!(blocked["dc"].contains("c already receives a BC stream through link bc"));
    }

    #[test]
    fn union_find_joins_and_keeps_the_smallest_name() {
        let mut u = UnionFind::default();
        u.union("m", "c");
        u.union("x", "m");
        assert!(u.same("c", "x"));
        assert_eq!(u.find("x"), "c");
        assert!(!u.same("c", "z"));
    }
}
