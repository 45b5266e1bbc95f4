//! The validating admission webhook, two hooks:
//!
//! - `/validate` refuses, at `kubectl apply`, a ReplicationLink that breaks a rule involving
//!   other objects (SI into a non-supplementary instance or from a supplementary one, BC
//!   between kinds, a second SI link into one instance, a seventeenth outgoing link, BC links
//!   that do not form a tree) with the same message the controller would report.
//! - `/evict` sees every eviction of an engine pod (a drain): evicting its family's primary
//!   annotates that Instance with `strand.dev/drain: <pod uid>` — the same id for every retry
//!   — so the operator switches the family over; the eviction itself is always let through to
//!   the PodDisruptionBudget, which refuses it (429, `kubectl drain` retries) until the
//!   instance is a secondary.
//!
//! Every replica serves it (not only the leader) over TLS with a certificate kept in a Secret,
//! whose PEM the operator also writes into the ValidatingWebhookConfiguration's `caBundle`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::reflector::Store;

use crate::controller::{ANNOTATION_DRAIN, MANAGER};
use crate::crd::{Instance, ReplicationLink, ReplicationLinkSpec};
use crate::desired::LABEL_INSTANCE;
use crate::rules;

/// Largest admission request body read.
const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The reason to refuse `candidate` (named `name`) given the other links and the instances of
/// its namespace, or `None` to admit it. Pure.
pub fn admit_link(
    name: &str,
    candidate: &ReplicationLinkSpec,
    links: &[ReplicationLink],
    instances: &[Instance],
) -> Option<String> {
    // A link being deleted is on its way out: the candidate may be its replacement.
    let live: Vec<&ReplicationLink> =
        links.iter().filter(|l| l.metadata.deletion_timestamp.is_none()).collect();
    let instances: Vec<&Instance> = instances.iter().collect();
    rules::check_namespace(&live, &instances, Some((name, candidate)))
        .remove(name)
        .filter(|reason| !reason.starts_with(rules::MISSING_PREFIX))
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    #[error("certificate: {0}")]
    Cert(String),
    #[error("cannot listen on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Where the webhook's certificate lives and which configuration trusts it.
pub struct Setup {
    pub namespace: String,
    pub service: String,
    pub secret: String,
    pub configuration: String,
}

/// The serving certificate and key (PEM), generated once and kept in a Secret shared by
/// every replica; the configuration's `caBundle` is set to the certificate.
pub async fn ensure_certificate(
    client: &kube::Client,
    setup: &Setup,
) -> Result<(String, String), WebhookError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &setup.namespace);
    let pem = match read_pem(secrets.get_opt(&setup.secret).await?) {
        Some(pem) => pem,
        None => {
            let generated = generate(&setup.service, &setup.namespace)?;
            let secret = Secret {
                metadata: ObjectMeta { name: Some(setup.secret.clone()), ..Default::default() },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(BTreeMap::from([
                    ("tls.crt".to_owned(), ByteString(generated.0.clone().into_bytes())),
                    ("tls.key".to_owned(), ByteString(generated.1.clone().into_bytes())),
                ])),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => generated,
                // Another replica was first: use its certificate.
                Err(kube::Error::Api(e)) if e.code == 409 => read_pem(secrets.get_opt(&setup.secret).await?)
                    .ok_or_else(|| {
                        WebhookError::Cert(format!("secret {} has no tls.crt/tls.key", setup.secret))
                    })?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    // Every replica does this at start: a conflict means another one wrote meanwhile, so read
    // again (it may already hold this bundle).
    for _ in 0..10 {
        let Some(mut config) = configs.get_opt(&setup.configuration).await? else {
            tracing::warn!(configuration = %setup.configuration, "no ValidatingWebhookConfiguration; links are checked by the controller only");
            break;
        };
        let bundle = ByteString(pem.0.clone().into_bytes());
        let mut changed = false;
        for webhook in config.webhooks.iter_mut().flatten() {
            if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
                webhook.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if !changed {
            break;
        }
        match configs.replace(&setup.configuration, &PostParams::default(), &config).await {
            Ok(_) => {
                tracing::info!(configuration = %setup.configuration, "webhook caBundle set");
                break;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pem)
}

fn read_pem(secret: Option<Secret>) -> Option<(String, String)> {
    let data = secret?.data?;
    let crt = String::from_utf8(data.get("tls.crt")?.0.clone()).ok()?;
    let key = String::from_utf8(data.get("tls.key")?.0.clone()).ok()?;
    Some((crt, key))
}

/// A self-signed certificate for the webhook Service's DNS names (rcgen's default validity,
/// 1975–4096: it is regenerated only if its Secret is deleted).
fn generate(service: &str, namespace: &str) -> Result<(String, String), WebhookError> {
    let names =
        vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local")];
    let err = |e: rcgen::Error| WebhookError::Cert(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn tls_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, WebhookError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WebhookError::Cert(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| WebhookError::Cert(e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Cert(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| WebhookError::Cert(e.to_string()))
}

/// Serves `POST /validate` over TLS until the process ends.
/// What the webhook reads to decide on a link: every replica's own watch of Instances and
/// ReplicationLinks (kept by reflectors started before leader election), so an admission makes
/// no API call — one pair of stores for the whole cluster, or one per watched namespace. A link
/// created a moment ago may not be seen yet; the controllers check the namespace again and
/// report such a link `Blocked`.
#[derive(Clone, Default)]
pub struct Cache {
    pub scopes: Vec<(Store<Instance>, Store<ReplicationLink>)>,
}

pub async fn serve(
    addr: SocketAddr,
    client: kube::Client,
    cache: Cache,
    pem: (String, String),
) -> Result<(), WebhookError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&pem.0, &pem.1)?));
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| WebhookError::Listen { addr, source })?;
    tracing::info!(%addr, "admission webhook listening");
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let acceptor = acceptor.clone();
        let client = client.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let client = client.clone();
                let cache = cache.clone();
                async move { Ok::<_, Infallible>(handle(req, &client, &cache).await) }
            });
            let _ =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    response
        .headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    client: &kube::Client,
    cache: &Cache,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path != "/validate" && path != "/evict" {
        return json_response(404, b"{\"error\":\"not found\"}".to_vec());
    }
    let body = match http_body_util::Limited::new(req.into_body(), BODY_BYTES_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return json_response(413, b"{\"error\":\"admission request too large\"}".to_vec()),
    };
    if path == "/evict" {
        return evict(&body, client).await;
    }
    let review: AdmissionReview<ReplicationLink> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_response(400, format!("{{\"error\":\"bad AdmissionReview: {e}\"}}").into_bytes());
        }
    };
    let request: AdmissionRequest<ReplicationLink> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            let reply = AdmissionResponse::invalid(e.to_string()).into_review();
            return json_response(200, serde_json::to_vec(&reply).unwrap_or_default());
        }
    };
    let mut response = AdmissionResponse::from(&request);
    // Updates that leave the spec alone (finalizers, labels, deletion) are always let through:
    // a link admitted before must stay removable.
    let spec_unchanged = matches!(
        (&request.object, &request.old_object),
        (Some(new), Some(old)) if new.spec == old.spec
    );
    let deleting = request.object.as_ref().is_some_and(|l| l.metadata.deletion_timestamp.is_some());
    if spec_unchanged || deleting {
        return json_response(200, serde_json::to_vec(&response.into_review()).unwrap_or_default());
    }
    if let (Operation::Create | Operation::Update, Some(link)) = (&request.operation, &request.object) {
        let ns = request.namespace.clone().unwrap_or_default();
        if let Some(reason) = decide(cache, &ns, &request.name, link) {
            tracing::info!(link = %request.name, namespace = %ns, %reason, "refused a ReplicationLink");
            response = response.deny(reason);
        }
    }
    json_response(200, serde_json::to_vec(&response.into_review()).unwrap_or_default())
}

/// An eviction of an engine pod: if it is its family's primary, ask for a switchover (once per
/// pod: the id is the pod's uid). Always allowed: the PodDisruptionBudget decides.
async fn evict(body: &[u8], client: &kube::Client) -> Response<Full<Bytes>> {
    let review: AdmissionReview<kube::core::DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return json_response(400, format!("{{\"error\":\"bad AdmissionReview: {e}\"}}").into_bytes());
        }
    };
    let request: AdmissionRequest<kube::core::DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            let reply = AdmissionResponse::invalid(e.to_string()).into_review();
            return json_response(200, serde_json::to_vec(&reply).unwrap_or_default());
        }
    };
    let response = AdmissionResponse::from(&request);
    let ns = request.namespace.clone().unwrap_or_default();
    if request.dry_run {
        return json_response(200, serde_json::to_vec(&response.into_review()).unwrap_or_default());
    }
    if let Err(e) = request_drain(client, &ns, &request.name).await {
        tracing::warn!(pod = %request.name, namespace = %ns, error = %crate::error_chain(&e), "could not ask for a switchover before an eviction");
    }
    json_response(200, serde_json::to_vec(&response.into_review()).unwrap_or_default())
}

async fn request_drain(client: &kube::Client, ns: &str, pod_name: &str) -> Result<(), kube::Error> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let Some(pod) = pods.get_opt(pod_name).await? else { return Ok(()) };
    let Some(instance) = pod.labels().get(LABEL_INSTANCE).cloned() else { return Ok(()) };
    let instances: Api<Instance> = Api::namespaced(client.clone(), ns);
    let Some(inst) = instances.get_opt(&instance).await? else { return Ok(()) };
    let status = inst.status.clone().unwrap_or_default();
    if status.family_primary.as_deref() != Some(instance.as_str()) {
        return Ok(()); // a secondary: its own PodDisruptionBudget lets it go
    }
    let id = pod.metadata.uid.clone().unwrap_or_else(|| pod_name.to_owned());
    if inst.annotations().get(ANNOTATION_DRAIN) == Some(&id) {
        return Ok(());
    }
    let patch = serde_json::json!({ "metadata": { "annotations": { ANNOTATION_DRAIN: id } } });
    instances
        .patch(
            &instance,
            &kube::api::PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() },
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    tracing::info!(%instance, pod = pod_name, "the primary's pod is being evicted: switchover requested");
    Ok(())
}

fn decide(cache: &Cache, ns: &str, name: &str, link: &ReplicationLink) -> Option<String> {
    let name = if name.is_empty() { link.name_any() } else { name.to_owned() };
    let in_ns = |meta: &ObjectMeta| meta.namespace.as_deref() == Some(ns);
    let links: Vec<ReplicationLink> = cache
        .scopes
        .iter()
        .flat_map(|(_, links)| links.state())
        .filter(|l| in_ns(&l.metadata))
        .map(|l| (*l).clone())
        .collect();
    let instances: Vec<Instance> = cache
        .scopes
        .iter()
        .flat_map(|(instances, _)| instances.state())
        .filter(|i| in_ns(&i.metadata))
        .map(|i| (*i).clone())
        .collect();
    admit_link(&name, &link.spec, &links, &instances)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::instance::StorageSpec;
    use crate::crd::{InstanceSpec, Mode};

    fn instance(name: &str, supplementary: bool) -> Instance {
        Instance::new(
            name,
            InstanceSpec {
                image: "strand-engine:0.1.0".into(),
                supplementary,
                storage: StorageSpec {
                    size: "1Gi".into(),
                    storage_class_name: None,
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
        )
    }

    fn link(name: &str, source: &str, target: &str, mode: Mode) -> ReplicationLink {
        ReplicationLink::new(
            name,
            ReplicationLinkSpec {
                source: source.into(),
                target: target.into(),
                mode,
                autorollback: false,
                noresync: false,
                updateresync: None,
                paused: false,
            },
        )
    }

    #[test]
    fn refuses_what_breaks_a_rule_and_admits_the_rest() {
        let instances = [instance("ardmore", false), instance("brynmawr", false), instance("malvern", true)];
        let existing = [link("a-m", "ardmore", "malvern", Mode::Si)];
        let admit = |l: &ReplicationLink| admit_link(&l.name_any(), &l.spec, &existing, &instances);
        assert!(admit(&link("a-b", "ardmore", "brynmawr", Mode::Bc)).is_none());
        assert!(
            admit(&link("a-b", "ardmore", "brynmawr", Mode::Si))
                .unwrap()
                .contains("brynmawr is not supplementary")
        );
        assert!(
            admit(&link("b-m", "brynmawr", "malvern", Mode::Si))
                .unwrap()
                .contains("already receives an SI stream through link a-m")
        );
        // Updating the existing link itself is no conflict with itself.
        assert!(admit(&link("a-m", "ardmore", "malvern", Mode::Si)).is_none());
        // A link may come before its instances.
        assert!(admit(&link("a-x", "ardmore", "oxford", Mode::Bc)).is_none());
        let many: Vec<ReplicationLink> =
            (0..16).map(|i| link(&format!("l{i}"), "ardmore", &format!("t{i}"), Mode::Bc)).collect();
        let seventeenth = link("l16", "ardmore", "t16", Mode::Bc);
        let reason = admit_link("l16", &seventeenth.spec, &many, &instances).unwrap();
        assert!(reason.contains("already sources 16 links"), "{reason}");
    }

    #[test]
    fn certificates_name_the_service() {
        let (crt, key) = generate("strand-operator-webhook", "strand-system").unwrap();
        assert!(crt.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls_config(&crt, &key).is_ok());
    }
}
