//! The CRD types: examples in deploy/examples round-trip through them, the committed YAML in
//! crds/ is what the types generate, and the validation rules are in the schema.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

use kube::CustomResourceExt;
use strand_operator::crd::{Instance, Mode, ReplicationLink};

fn examples() -> Vec<serde_yaml::Value> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/bc-pair.yaml"))
            .unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

#[test]
fn examples_roundtrip_through_the_types() {
    for doc in examples() {
        match doc["kind"].as_str().unwrap() {
            "Instance" => {
                let i: Instance = serde_yaml::from_value(doc.clone()).unwrap();
                assert_eq!(i.spec.storage.size, "1Gi");
                assert!(!i.spec.supplementary);
                let back: Instance = serde_yaml::from_value(serde_yaml::to_value(&i).unwrap()).unwrap();
                assert_eq!(back.spec, i.spec);
            }
            "ReplicationLink" => {
                let l: ReplicationLink = serde_yaml::from_value(doc.clone()).unwrap();
                assert_eq!(l.spec.mode, Mode::Bc);
                assert_eq!((l.spec.source.as_str(), l.spec.target.as_str()), ("ardmore", "brynmawr"));
                let back: ReplicationLink =
                    serde_yaml::from_value(serde_yaml::to_value(&l).unwrap()).unwrap();
                assert_eq!(back.spec, l.spec);
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

#[test]
fn unknown_mode_is_rejected_by_the_types() {
    let err =
        serde_yaml::from_str::<strand_operator::crd::ReplicationLinkSpec>("{source: a, target: b, mode: XX}")
            .unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");
}

#[test]
fn committed_crds_match_the_types() {
    for (file, crd) in [
        ("instances.strand.dev.yaml", Instance::crd()),
        ("replicationlinks.strand.dev.yaml", ReplicationLink::crd()),
    ] {
        let path = format!("{}/../crds/{file}", env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(&path).unwrap();
        let body = committed.split_once('\n').unwrap().1;
        assert_eq!(
            body,
            strand_operator::crd::to_yaml(&crd).unwrap(),
            "{file} drifted: run `cargo run -p strand-operator --bin crdgen`"
        );
    }
}

#[test]
fn validation_rules_are_in_the_schema() {
    let link = serde_json::to_string(&ReplicationLink::crd()).unwrap();
    for rule in [
        "self.source != self.target",
        "self.mode == 'SI' || !self.noresync",
        "!(self.autorollback && self.noresync)",
    ] {
        assert!(link.contains(rule), "missing rule {rule}");
    }
    let instance = serde_json::to_string(&Instance::crd()).unwrap();
    assert!(instance.contains("self == oldSelf"), "supplementary is immutable");
    assert!(instance.contains("\"name\":\"Role\""), "kubectl get shows the role");
}
