//! The chart grants exactly what the operator's code uses: `USED` lists every API call it
//! makes, by kind and verb, with where it is made (kept by hand: a call added to the code is
//! added here). A grant not in the list, or a listed use the chart does not grant, fails here,
//! in both RBAC modes; the end-to-end tests run the operator under these rules on an API
//! server with the RBAC authorizer, so a call missing from the list and the chart fails there
//! when the tests exercise it.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

use std::collections::BTreeSet;

/// (API group, resource, verb, where the code uses it).
const USED: &[(&str, &str, &str, &str)] = &[
    ("strand.dev", "instances", "list", "main.rs: reflector watch"),
    ("strand.dev", "instances", "watch", "main.rs: reflector watch"),
    ("strand.dev", "instances", "get", "webhook.rs request_drain: get_opt"),
    ("strand.dev", "instances", "patch", "webhook.rs request_drain: the drain annotation"),
    ("strand.dev", "replicationlinks", "list", "main.rs: reflectors (the controllers' and the webhook's)"),
    ("strand.dev", "replicationlinks", "watch", "main.rs: reflector watch"),
    ("strand.dev", "replicationlinks", "patch", "controller/family.rs, link.rs: finalizers"),
    ("strand.dev", "families", "list", "main.rs: reflector watch"),
    ("strand.dev", "families", "watch", "main.rs: reflector watch"),
    ("strand.dev", "families", "create", "controller/instance.rs: apply of a new Family"),
    ("strand.dev", "families", "patch", "controller/instance.rs: apply of the Family"),
    ("strand.dev", "families", "delete", "controller/family.rs: an emptied family"),
    ("strand.dev", "instances/status", "patch", "controller/family.rs write_instance"),
    ("strand.dev", "replicationlinks/status", "patch", "controller/family.rs write_link, link.rs"),
    ("strand.dev", "families/status", "patch", "controller/family.rs: the family's status"),
    ("strand.dev", "instances/finalizers", "update", "owner references with blockOwnerDeletion"),
    ("apps", "statefulsets", "list", "main.rs: reflector; Instance controller owns()"),
    ("apps", "statefulsets", "watch", "main.rs: reflector; Instance controller owns()"),
    ("apps", "statefulsets", "create", "controller/instance.rs: apply"),
    ("apps", "statefulsets", "patch", "controller/instance.rs: apply"),
    ("", "services", "create", "controller/instance.rs: apply"),
    ("", "services", "patch", "controller/instance.rs: apply"),
    ("policy", "poddisruptionbudgets", "create", "controller/instance.rs: apply"),
    ("policy", "poddisruptionbudgets", "patch", "controller/instance.rs: apply"),
    ("", "pods", "list", "main.rs: reflector watch"),
    ("", "pods", "watch", "main.rs: reflector watch"),
    ("", "pods", "get", "webhook.rs request_drain: get_opt"),
    ("", "pods", "delete", "controller/instance.rs: a pod stuck on a dropped image"),
    ("", "secrets", "list", "main.rs: reflector watch (managed-by label)"),
    ("", "secrets", "watch", "main.rs: reflector watch (managed-by label)"),
    ("", "secrets", "get", "webhook.rs: its TLS secret, get_opt"),
    ("", "secrets", "create", "controller/instance.rs: admin and replication secrets; webhook.rs: TLS"),
    ("events.k8s.io", "events", "create", "controller/mod.rs publish: Recorder"),
    ("events.k8s.io", "events", "patch", "controller/mod.rs publish: Recorder (a series)"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "get", "webhook.rs: its CA bundle"),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "update",
        "webhook.rs: its CA bundle",
    ),
    ("coordination.k8s.io", "leases", "get", "leader.rs: get_opt"),
    ("coordination.k8s.io", "leases", "create", "leader.rs: create"),
    ("coordination.k8s.io", "leases", "update", "leader.rs: replace"),
];

/// The ClusterRole and Role rules of one of the chart's RBAC templates as (group, resource,
/// verb), with template expressions taken out (conditional blocks are rendered as when they
/// are on, a `range` once; names become `x`, `x-leader`, …), from the documents whose kind and
/// name pass `keep`.
fn granted(file: &str, keep: impl Fn(&str, &str) -> bool) -> BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(format!(
        "{}/../charts/strand-operator/templates/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let plain: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("{{-"))
        .map(|l| {
            let mut out = l.to_string();
            while let (Some(a), Some(b)) = (out.find("{{"), out.find("}}")) {
                out.replace_range(a..b + 2, "x");
            }
            out + "\n"
        })
        .collect();
    let mut out = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&plain) {
        let doc: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        if !matches!(doc["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        if !keep(doc["kind"].as_str().unwrap(), doc["metadata"]["name"].as_str().unwrap()) {
            continue;
        }
        for rule in doc["rules"].as_sequence().unwrap() {
            for group in rule["apiGroups"].as_sequence().unwrap() {
                for resource in rule["resources"].as_sequence().unwrap() {
                    for verb in rule["verbs"].as_sequence().unwrap() {
                        out.insert((
                            group.as_str().unwrap().to_string(),
                            resource.as_str().unwrap().to_string(),
                            verb.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    out
}

fn check(mode: &str, granted: &BTreeSet<(String, String, String)>) {
    let used: BTreeSet<(String, String, String)> =
        USED.iter().map(|(g, r, v, _)| (g.to_string(), r.to_string(), v.to_string())).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    let missing: Vec<_> = used.difference(granted).collect();
    assert!(unused.is_empty(), "{mode}: the chart grants what the code does not use: {unused:?}");
    assert!(missing.is_empty(), "{mode}: the code uses what the chart does not grant: {missing:?}");
    assert!(granted.len() > 30, "{mode}: read only {} grants from the chart", granted.len());
}

#[test]
fn the_chart_grants_exactly_what_the_code_uses() {
    // watchNamespaces empty: rbac.yaml's ClusterRole and the leader Role.
    check("whole cluster", &granted("rbac.yaml", |_, _| true));
}

fn set(
    items: impl Iterator<Item = (&'static str, &'static str, &'static str)>,
) -> BTreeSet<(String, String, String)> {
    items.map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string())).collect()
}

/// Where a call is made when the operator watches listed namespaces: in each of them, in the
/// release namespace (the Lease, the webhook's TLS Secret) or cluster-wide (the webhook
/// configuration).
fn place(group: &str, resource: &str, verb: &str) -> &'static str {
    match (group, resource, verb) {
        ("coordination.k8s.io", _, _) => "release",
        ("", "secrets", "get") => "release",
        ("admissionregistration.k8s.io", _, _) => "cluster",
        _ => "watched",
    }
}

#[test]
fn the_namespaced_chart_grants_exactly_what_the_code_uses_where_it_uses_it() {
    // watchNamespaces set: rbac-namespaced.yaml's Role in each watched namespace, its webhook
    // Role in the release namespace and its one ClusterRole, and the leader Role of rbac.yaml.
    let file = "rbac-namespaced.yaml";
    let watched = granted(file, |kind, name| kind == "Role" && name == "x");
    let want_watched =
        set(USED.iter().filter(|u| place(u.0, u.1, u.2) == "watched").map(|u| (u.0, u.1, u.2)));
    assert_eq!(watched, want_watched, "the Role in each watched namespace");
    let mut release = granted(file, |kind, name| kind == "Role" && name == "x-webhook");
    release.extend(granted("rbac.yaml", |_, name| name == "x-leader"));
    // The webhook also creates its TLS Secret there.
    let want_release = set(USED
        .iter()
        .filter(|u| place(u.0, u.1, u.2) == "release" || (u.1 == "secrets" && u.2 == "create"))
        .map(|u| (u.0, u.1, u.2)));
    assert_eq!(release, want_release, "the Roles in the release namespace");
    let cluster = granted(file, |kind, _| kind == "ClusterRole");
    let want_cluster =
        set(USED.iter().filter(|u| place(u.0, u.1, u.2) == "cluster").map(|u| (u.0, u.1, u.2)));
    assert_eq!(cluster, want_cluster, "the only cluster-wide grant: the webhook configuration");
    let mut all = watched;
    all.extend(release);
    all.extend(cluster);
    check("watched namespaces", &all);
}
