//! Pure reconcile decisions for an Instance: the Kubernetes objects that run it. No I/O: the
//! controller applies these with server-side apply (field manager `strand-operator`), so
//! applying them again is a no-op and fields owned by others are left alone.
//!
//! Addressing: every engine listens on fixed ports named `resp`, `admin` and `repl`, on all of
//! the pod's IPv4 addresses (`0.0.0.0`): its pod IP, where the operator reaches an engine's
//! admin API and engines reach each other's replication listeners (`status.podIP`, which works
//! the same in any cluster and on the test process node, with no DNS and no kube-proxy), and
//! the pod's loopback, where `kubectl port-forward` arrives. The headless Service gives clients
//! stable DNS names where a cluster has DNS.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{Family, FamilySpec, GROUP, Instance, VERSION};

pub const PORT_RESP: i32 = 6379;
pub const PORT_ADMIN: i32 = 8080;
pub const PORT_REPL: i32 = 7070;
/// Label carrying the Instance name on every object the operator makes for it.
pub const LABEL_INSTANCE: &str = "strand.dev/instance";
/// Secret shared by every instance of a namespace: replication streams prove it.
pub const REPLICATION_SECRET: &str = "strand-replication";
/// Key of the replication secret in it.
pub const REPLICATION_SECRET_KEY: &str = "secret";
/// Key of the admin token in an instance's own Secret (`<name>-admin`).
pub const ADMIN_TOKEN_KEY: &str = "token";
/// Mount point of the data volume.
pub const DATA_DIR: &str = "/data";
/// The engine image's user and group (`nonroot` of the distroless base); the volume is made
/// writable for this group through `fsGroup`.
pub const ENGINE_UID: i64 = 65532;

/// The names of an Instance's objects.
pub fn admin_secret_name(instance: &str) -> String {
    format!("{instance}-admin")
}

pub fn labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
        ("app.kubernetes.io/name".to_owned(), "strand-engine".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "strand-operator".to_owned()),
    ])
}

/// Makes the Instance the owner (garbage collection deletes its objects with it).
pub fn owner(inst: &Instance) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "Instance".into(),
        name: inst.metadata.name.clone()?,
        uid: inst.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn meta(inst: &Instance, name: String) -> ObjectMeta {
    let instance = inst.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(name),
        namespace: inst.metadata.namespace.clone(),
        labels: Some(labels(&instance)),
        owner_references: owner(inst).map(|o| vec![o]),
        ..Default::default()
    }
}

/// The engine's command line. It listens on every IPv4 address of its pod: the pod IP, where the
/// operator and the other engines reach it, and loopback, where `kubectl port-forward` does.
pub fn engine_args(inst: &Instance) -> Vec<String> {
    let name = inst.metadata.name.clone().unwrap_or_default();
    let mut args = vec![
        "run".to_owned(),
        "--data-dir".to_owned(),
        format!("{DATA_DIR}/{name}"),
        "--name".to_owned(),
        name,
        "--resp-addr".to_owned(),
        format!("0.0.0.0:{PORT_RESP}"),
        "--admin-addr".to_owned(),
        format!("0.0.0.0:{PORT_ADMIN}"),
        "--admin-token-file".to_owned(),
        "/etc/strand/admin/token".to_owned(),
        "--repl-addr".to_owned(),
        format!("0.0.0.0:{PORT_REPL}"),
        "--repl-secret-file".to_owned(),
        "/etc/strand/replication/secret".to_owned(),
    ];
    if inst.spec.supplementary {
        args.push("--supplementary".to_owned());
    }
    if inst.spec.auth_secret_ref.is_some() {
        args.push("--password-file".to_owned());
        args.push("/etc/strand/auth/password".to_owned());
    }
    if let Some(j) = &inst.spec.journal {
        for (flag, value) in [
            ("--journal-keep-bytes", j.keep_bytes),
            ("--journal-retain-bytes", j.retain_bytes),
            ("--journal-retain-seconds", j.retain_seconds),
        ] {
            if let Some(v) = value {
                args.push(flag.to_owned());
                args.push(v.to_string());
            }
        }
    }
    args
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn secret_volume(name: &str, secret: String) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One replica, its own volume, the engine container (running `image`: the spec's, or during
/// an upgrade the one it runs until its turn) with named ports and probes.
pub fn statefulset(inst: &Instance, image: &str) -> StatefulSet {
    let name = inst.metadata.name.clone().unwrap_or_default();
    let spec = &inst.spec;
    let mut volumes = vec![
        secret_volume("admin", admin_secret_name(&name)),
        secret_volume("replication", REPLICATION_SECRET.to_owned()),
    ];
    let mut mounts = vec![
        VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..Default::default() },
        VolumeMount {
            name: "admin".into(),
            mount_path: "/etc/strand/admin".into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "replication".into(),
            mount_path: "/etc/strand/replication".into(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    if let Some(secret) = &spec.auth_secret_ref {
        // Clients AUTH with the `password` key of this Secret (the application's own).
        volumes.push(secret_volume("auth", secret.clone()));
        mounts.push(VolumeMount {
            name: "auth".into(),
            mount_path: "/etc/strand/auth".into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let container = Container {
        name: "engine".into(),
        image: Some(image.to_owned()),
        args: Some(engine_args(inst)),
        ports: Some(vec![port("resp", PORT_RESP), port("admin", PORT_ADMIN), port("repl", PORT_REPL)]),
        readiness_probe: Some(probe("/readyz", 2, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        resources: spec.resources.clone(),
        volume_mounts: Some(mounts),
        // The engine writes only its volume: nothing else to write, gain or escalate to.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".into()), labels: Some(labels(&name)), ..Default::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(spec.storage.size.clone()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    StatefulSet {
        metadata: meta(inst, name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(LABEL_INSTANCE.to_owned(), name.clone())])),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&name)), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    affinity: spec.affinity.clone(),
                    tolerations: spec.tolerations.clone(),
                    // The engine finishes in-flight commits on SIGTERM.
                    termination_grace_period_seconds: Some(30),
                    // Non-root (the image's `nonroot` user), and the volume made writable for
                    // it by group (a fresh volume is owned by root on most provisioners).
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(ENGINE_UID),
                        run_as_group: Some(ENGINE_UID),
                        fs_group: Some(ENGINE_UID),
                        fs_group_change_policy: Some("OnRootMismatch".into()),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            // The StatefulSet controller owns the claim to the StatefulSet (deleted with the
            // Instance) or leaves it for a later Instance of the same name.
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(spec.storage.when_deleted.as_str().into()),
                when_scaled: Some("Retain".into()),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The Family object of `name` with `members` as owners (not controllers): the garbage
/// collector deletes it with the last of them. Its status is the operator's.
pub fn family(name: &str, namespace: &str, members: &[&Instance]) -> Family {
    let mut owners: Vec<OwnerReference> = members
        .iter()
        .filter_map(|m| owner(m))
        .map(|o| OwnerReference { controller: Some(false), ..o })
        .collect();
    owners.sort_by(|a, b| a.name.cmp(&b.name));
    Family {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "strand-operator".to_owned(),
            )])),
            owner_references: Some(owners),
            ..Default::default()
        },
        spec: FamilySpec {},
        status: None,
    }
}

/// Headless Service: stable DNS for clients where the cluster has DNS; ports by name.
pub fn service(inst: &Instance) -> Service {
    let name = inst.metadata.name.clone().unwrap_or_default();
    let port = |n: &str, p: i32| ServicePort {
        name: Some(n.into()),
        port: p,
        target_port: Some(IntOrString::String(n.into())),
        ..Default::default()
    };
    Service {
        metadata: meta(inst, name.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([(LABEL_INSTANCE.to_owned(), name)])),
            ports: Some(vec![port("resp", PORT_RESP), port("admin", PORT_ADMIN), port("repl", PORT_REPL)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Voluntary evictions (drains): a secondary may go (one at a time, it is one pod); the
/// family's primary may not — the eviction webhook asks for a switchover and the drain's
/// retries get through once this instance is a secondary.
pub fn pdb(inst: &Instance, is_primary: bool) -> PodDisruptionBudget {
    let name = inst.metadata.name.clone().unwrap_or_default();
    PodDisruptionBudget {
        metadata: meta(inst, name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(if is_primary { 0 } else { 1 })),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(LABEL_INSTANCE.to_owned(), name)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::InstanceSpec;
    use crate::crd::instance::StorageSpec;

    fn instance(supplementary: bool) -> Instance {
        let mut inst = Instance::new(
            "malvern",
            InstanceSpec {
                image: "strand-engine:0.1.0".into(),
                supplementary,
                storage: StorageSpec {
                    size: "1Gi".into(),
                    storage_class_name: Some("standard".into()),
                    when_deleted: Default::default(),
                },
                resources: None,
                affinity: None,
                tolerations: None,
                auth_secret_ref: None,
                paused: false,
                primary_update_strategy: Default::default(),
                primary_update_method: Default::default(),
                journal: None,
            },
        );
        inst.metadata.namespace = Some("prod".into());
        inst.metadata.uid = Some("uid-1".into());
        inst
    }

    #[test]
    fn statefulset_runs_one_engine_with_named_ports_probes_and_a_volume() {
        let sts = statefulset(&instance(true), "strand-engine:0.1.0");
        assert_eq!(sts.metadata.name.as_deref(), Some("malvern"));
        assert_eq!(sts.metadata.namespace.as_deref(), Some("prod"));
        let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Instance", "uid-1", Some(true))
        );
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        let ports: Vec<_> = c.ports.as_ref().unwrap().iter().map(|p| p.name.clone().unwrap()).collect();
        assert_eq!(ports, ["resp", "admin", "repl"]);
        let args = c.args.as_ref().unwrap();
        assert!(args.windows(2).any(|w| w == ["--name", "malvern"]));
        assert_eq!(args.last().unwrap(), "--supplementary");
        assert_eq!(
            c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
            Some("/readyz")
        );
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(claim_spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0, "1Gi");
        assert!(!engine_args(&instance(false)).contains(&"--supplementary".to_owned()));
        assert!(!engine_args(&instance(false)).iter().any(|a| a.starts_with("--journal")), "engine defaults");
        let mut bounded = instance(false);
        bounded.spec.journal = Some(crate::crd::instance::JournalSpec {
            keep_bytes: None,
            retain_bytes: Some(1 << 30),
            retain_seconds: Some(86_400),
        });
        let args = engine_args(&bounded);
        assert!(args.windows(2).any(|w| w == ["--journal-retain-bytes", "1073741824"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--journal-retain-seconds", "86400"]), "{args:?}");
        assert!(!args.iter().any(|a| a == "--journal-keep-bytes"), "{args:?}");
        let mut with_auth = instance(false);
        with_auth.spec.auth_secret_ref = Some("app-auth".into());
        assert!(
            engine_args(&with_auth).windows(2).any(|w| w == ["--password-file", "/etc/strand/auth/password"])
        );
        let pod = statefulset(&with_auth, "strand-engine:0.1.0").spec.unwrap().template.spec.unwrap();
        assert!(
            pod.volumes
                .unwrap()
                .iter()
                .any(|v| v.secret.as_ref().unwrap().secret_name.as_deref() == Some("app-auth"))
        );
    }

    #[test]
    fn the_engine_runs_as_non_root_on_a_group_writable_volume_with_nothing_else_to_write() {
        let sts = statefulset(&instance(false), "strand-engine:0.1.0");
        let pod = sts.spec.and_then(|s| s.template.spec).expect("pod spec");
        let psc = pod.security_context.clone().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            (psc.run_as_user, psc.run_as_group, psc.fs_group),
            (Some(65532), Some(65532), Some(65532))
        );
        assert_eq!(psc.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"));
        let sc = pod.containers[0].security_context.clone().expect("container security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
        // Everything the engine writes is under its volume's mount.
        let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
        assert!(mounts.iter().any(|m| m.mount_path == DATA_DIR && m.read_only != Some(true)));
        assert!(engine_args(&instance(false)).iter().any(|a| a.starts_with(&format!("{DATA_DIR}/"))));
    }

    #[test]
    fn the_volume_goes_with_the_instance_unless_it_is_retained() {
        let policy = |inst: &Instance| {
            statefulset(inst, "strand-engine:0.1.0")
                .spec
                .and_then(|s| s.persistent_volume_claim_retention_policy)
                .map(|p| (p.when_deleted, p.when_scaled))
        };
        let mut inst = instance(false);
        assert_eq!(policy(&inst), Some((Some("Delete".into()), Some("Retain".into()))));
        inst.spec.storage.when_deleted = crate::crd::instance::VolumeRetention::Retain;
        assert_eq!(policy(&inst), Some((Some("Retain".into()), Some("Retain".into()))));
    }

    #[test]
    fn service_is_headless_and_pdb_blocks_evicting_only_the_primary() {
        let svc = service(&instance(false));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.selector.unwrap()[LABEL_INSTANCE], "malvern");
        let primary = pdb(&instance(false), true);
        assert_eq!(primary.spec.unwrap().max_unavailable, Some(IntOrString::Int(0)));
        let secondary = pdb(&instance(false), false);
        assert_eq!(secondary.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }

    #[test]
    fn objects_are_the_same_every_time() {
        let inst = instance(false);
        assert_eq!(statefulset(&inst, "i"), statefulset(&inst, "i"));
        assert_eq!(serde_json::to_string(&service(&inst)).ok(), serde_json::to_string(&service(&inst)).ok());
    }
}
