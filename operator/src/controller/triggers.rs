//! What starts a reconcile. Each watch stream passes an object on only when a fingerprint of
//! what its controller cares about changed (spec, requests, readiness, image, a family's
//! primary and members) — never for the status writes the controllers make themselves.
//!
//! Fingerprints are remembered per filter and per object UID: a deleted object re-created
//! under the same name has a new UID and is always passed on (keyed by name, its first
//! generation would look unchanged and be dropped). Entries of objects that are gone are
//! dropped by [`Seen::retain`].

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};

use crate::crd::{Family, Instance};

/// The fingerprints every [`changed`] filter last passed on.
#[derive(Clone, Default)]
pub struct Seen {
    prints: Arc<Mutex<HashMap<(usize, String), u64>>>,
    filters: Arc<AtomicUsize>,
}

impl Seen {
    /// Drops what is remembered of objects whose UID is not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        self.lock().retain(|(_, uid), _| live.contains(uid));
    }

    /// Entries remembered, over all filters.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, String), u64>> {
        self.prints.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The key an object is remembered by: its UID (its namespace and name if it has none).
pub fn identity<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    meta.uid.clone().unwrap_or_else(|| {
        format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
    })
}

/// Passes an object on only when `fingerprint` of it changed since this filter last passed it
/// on (or it is new).
pub fn changed<K, F>(
    seen: Seen,
    stream: impl Stream<Item = Arc<K>>,
    fingerprint: F,
) -> impl Stream<Item = Arc<K>>
where
    K: Resource,
    F: Fn(&K) -> u64,
{
    let filter = seen.filters.fetch_add(1, Ordering::Relaxed);
    stream.filter(move |obj| {
        let print = fingerprint(obj);
        let new = seen.lock().insert((filter, identity(obj.as_ref())), print) != Some(print);
        std::future::ready(new)
    })
}

pub fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Spec and lifecycle of an object: its generation and whether it is being deleted.
pub fn spec_print<K: Resource>(obj: &K) -> u64 {
    hash_of((obj.meta().generation, obj.meta().deletion_timestamp.is_some()))
}

/// An Instance's spec and its `strand.dev/…` requests.
pub fn request_print(inst: &Instance) -> u64 {
    let requests: BTreeMap<&String, &String> =
        inst.annotations().iter().filter(|(k, _)| k.starts_with("strand.dev/")).collect();
    hash_of((spec_print(inst), requests))
}

/// Whether a pod is ready and where.
pub fn pod_print(pod: &Pod) -> u64 {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let image = pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone());
    hash_of((ready, status.and_then(|s| s.pod_ip.clone()), pod.metadata.deletion_timestamp.is_some(), image))
}

/// The image a StatefulSet runs.
pub fn set_print(set: &StatefulSet) -> u64 {
    let spec = set.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    hash_of(spec.and_then(|s| s.containers.first()).and_then(|c| c.image.clone()))
}

pub fn family_print(f: &Family) -> u64 {
    let s = f.status.as_ref();
    let upgrade = s.and_then(|s| s.upgrade.as_ref()).map(|u| (u.image.clone(), u.released.clone()));
    hash_of((s.and_then(|s| s.primary.clone()), s.map(|s| s.members.clone()), upgrade, spec_print(f)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    use crate::crd::InstanceSpec;

    fn instance(uid: &str, generation: i64, seqno_in_status: u64) -> Arc<Instance> {
        let spec = serde_json::json!({ "image": "strand-engine:0.1.0", "storage": { "size": "1Gi" } });
        let mut i = Instance::new("ardmore", serde_json::from_value::<InstanceSpec>(spec).expect("spec"));
        i.metadata = ObjectMeta {
            name: Some("ardmore".into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        };
        i.status = Some(
            serde_json::from_value(serde_json::json!({ "journalSeqno": seqno_in_status })).expect("status"),
        );
        Arc::new(i)
    }

    fn passed(seen: &Seen, objects: Vec<Arc<Instance>>) -> Vec<(String, i64)> {
        let out = futures::executor::block_on(
            changed(seen.clone(), futures::stream::iter(objects), spec_print::<Instance>).collect::<Vec<_>>(),
        );
        out.iter().map(|i| (identity(i.as_ref()), i.metadata.generation.unwrap_or(0))).collect()
    }

    #[test]
    fn status_writes_do_not_pass_spec_changes_and_recreations_do() {
        let seen = Seen::default();
        let got = passed(
            &seen,
            vec![
                instance("uid-1", 1, 10),
                instance("uid-1", 1, 11), // a status write: same generation
                instance("uid-1", 2, 11), // a spec change
                instance("uid-2", 1, 0),  // deleted and re-created under the same name
            ],
        );
        assert_eq!(got, [("uid-1".into(), 1), ("uid-1".into(), 2), ("uid-2".into(), 1)]);
    }

    #[test]
    fn filters_remember_separately_and_forget_what_is_gone() {
        let seen = Seen::default();
        assert_eq!(passed(&seen, vec![instance("uid-1", 1, 0)]).len(), 1);
        // A second filter over the same objects has its own memory.
        assert_eq!(passed(&seen, vec![instance("uid-1", 1, 0)]).len(), 1);
        assert_eq!(seen.len(), 2);
        seen.retain(&HashSet::from(["uid-9".to_string()]));
        assert!(seen.is_empty());
    }
}
