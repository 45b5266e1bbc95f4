//! Families from links (pure): which Instances form a family, what the family is called, and
//! which way each BC link's stream flows given the family's current primary.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::rules::UnionFind;

/// A BC link as the topology sees it (one that passed the namespace rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BcEdge {
    pub link: String,
    /// The spec's source and target: the direction the family was founded in.
    pub source: String,
    pub target: String,
}

/// The families of a namespace: every Instance is in exactly one (a lone instance forms its
/// own), each with a stable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Families {
    /// Family name → members.
    pub members: BTreeMap<String, BTreeSet<String>>,
    /// Instance → family name.
    pub of: BTreeMap<String, String>,
}

/// Groups `instances` into families by `edges` and names each after its founder: the member
/// no BC link goes into (the seed names a family by its root primary). BC links form a tree
/// with at most one link into each instance (the namespace rules), so each family has exactly
/// one founder and names never collide. Links do not change when the primary does, so the
/// name stays through switchovers and failovers; deleting the founder renames the family.
pub fn families(instances: &[&str], edges: &[BcEdge]) -> Families {
    let present: BTreeSet<&str> = instances.iter().copied().collect();
    let mut uf = UnionFind::default();
    for i in instances {
        uf.find(i);
    }
    let edges: Vec<&BcEdge> = edges
        .iter()
        .filter(|e| present.contains(e.source.as_str()) && present.contains(e.target.as_str()))
        .collect();
    for e in &edges {
        uf.union(&e.source, &e.target);
    }
    let mut components: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in instances {
        components.entry(uf.find(i)).or_default().insert((*i).to_owned());
    }
    // Who some BC link goes into, once: a founder is a member that is nobody's target.
    let targets: BTreeSet<&str> = edges.iter().map(|e| e.target.as_str()).collect();
    let mut out = Families { members: BTreeMap::new(), of: BTreeMap::new() };
    for (rep, members) in components {
        let name = founder_of(&members, &targets).unwrap_or(&rep).to_owned();
        for m in &members {
            out.of.insert(m.clone(), name.clone());
        }
        out.members.insert(name, members);
    }
    out
}

/// The stream tree of a family rooted at `primary`: member → (parent it receives from, the
/// link between them). Members not connected to the primary by `edges` are absent.
pub fn parents(primary: &str, edges: &[&BcEdge]) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    let mut seen = BTreeSet::from([primary.to_owned()]);
    let mut queue = VecDeque::from([primary.to_owned()]);
    while let Some(at) = queue.pop_front() {
        let mut next: Vec<(&str, &str)> = edges
            .iter()
            .filter_map(|e| {
                if e.source == at {
                    Some((e.target.as_str(), e.link.as_str()))
                } else if e.target == at {
                    Some((e.source.as_str(), e.link.as_str()))
                } else {
                    None
                }
            })
            .collect();
        next.sort_unstable();
        for (other, link) in next {
            if seen.insert(other.to_owned()) {
                out.insert(other.to_owned(), (at.clone(), link.to_owned()));
                queue.push_back(other.to_owned());
            }
        }
    }
    out
}

/// The founder of a set of members: the one no BC link goes into (smallest name if several).
pub fn founder<'a>(members: &'a BTreeSet<String>, edges: &[&BcEdge]) -> Option<&'a str> {
    let targets: BTreeSet<&str> = edges.iter().map(|e| e.target.as_str()).collect();
    founder_of(members, &targets)
}

/// [`founder`] given the targets of the BC links (computed once for a whole namespace).
fn founder_of<'a>(members: &'a BTreeSet<String>, targets: &BTreeSet<&str>) -> Option<&'a str> {
    members.iter().find(|m| !targets.contains(m.as_str())).or(members.first()).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn edge(link: &str, source: &str, target: &str) -> BcEdge {
        BcEdge { link: link.into(), source: source.into(), target: target.into() }
    }

    #[test]
    fn families_are_named_after_their_founder() {
        let edges = [
            edge("a-b", "ardmore", "brynmawr"),
            edge("b-o", "brynmawr", "oxford"),
            edge("m-n", "malvern", "newtown"),
        ];
        let all = ["ardmore", "brynmawr", "malvern", "newtown", "oxford", "lone"];
        let f = families(&all, &edges);
        assert_eq!(f.members.keys().collect::<Vec<_>>(), ["ardmore", "lone", "malvern"]);
        assert_eq!(f.of["oxford"], "ardmore");
        assert_eq!(f.of["newtown"], "malvern");
        // The order objects appear in does not matter.
        let reversed: Vec<&str> = all.iter().rev().copied().collect();
        assert_eq!(families(&reversed, &edges), f);
        // Without its founder (instance and link deleted) the family is named after the new root.
        let f = families(&["brynmawr", "oxford"], &edges[1..2]);
        assert_eq!(f.of["oxford"], "brynmawr");
        // A link to a missing instance joins nothing.
        let f = families(&["ardmore"], &edges);
        assert_eq!(f.of["ardmore"], "ardmore");
    }

    #[test]
    fn the_stream_tree_follows_the_primary() {
        let edges = [edge("a-b", "ardmore", "brynmawr"), edge("b-o", "brynmawr", "oxford")];
        let refs: Vec<&BcEdge> = edges.iter().collect();
        let p = parents("ardmore", &refs);
        assert_eq!(p["brynmawr"], ("ardmore".into(), "a-b".into()));
        assert_eq!(p["oxford"], ("brynmawr".into(), "b-o".into()));
        let p = parents("brynmawr", &refs);
        assert_eq!(p["ardmore"], ("brynmawr".into(), "a-b".into()));
        assert_eq!(p["oxford"], ("brynmawr".into(), "b-o".into()));
        let p = parents("oxford", &refs);
        assert_eq!(p["brynmawr"], ("oxford".into(), "b-o".into()));
        assert_eq!(p["ardmore"], ("brynmawr".into(), "a-b".into()));
        assert!(!p.contains_key("oxford"));
        let members: BTreeSet<String> = ["ardmore", "brynmawr", "oxford"].map(String::from).into();
        assert_eq!(founder(&members, &refs), Some("ardmore"));
    }

    proptest! {
        /// For any tree of links and any primary, every member but the primary has exactly one
        /// parent, and following parents always reaches the primary.
        #[test]
        fn every_member_reaches_the_primary(parents_of in proptest::collection::vec(0usize..1000, 1..12), root in 0usize..12) {
            let n = parents_of.len() + 1;
            let names: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
            // Member k+1 links to some earlier member (a random tree), in a random direction.
            let edges: Vec<BcEdge> = parents_of.iter().enumerate().map(|(k, p)| {
                let (a, b) = (&names[p % (k + 1)], &names[k + 1]);
                if p % 2 == 0 { edge(&format!("l{k}"), a, b) } else { edge(&format!("l{k}"), b, a) }
            }).collect();
            let refs: Vec<&BcEdge> = edges.iter().collect();
            let primary = &names[root % n];
            let tree = parents(primary, &refs);
            prop_assert_eq!(tree.len(), n - 1);
            for m in &names {
                let mut at = m.clone();
                let mut hops = 0;
                while &at != primary {
                    at = tree[&at].0.clone();
                    hops += 1;
                    prop_assert!(hops < n);
                }
            }
        }
    }
}
