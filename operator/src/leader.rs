//! Leader election with a `coordination.k8s.io/v1` Lease: only the holder reconciles. A
//! replica takes the Lease when it is free or its holder stopped renewing it for longer than
//! the lease duration; updates carry the resourceVersion, so two replicas cannot both win. The
//! holder renews it every [`RENEW_EVERY`]; if it cannot renew within the lease duration it
//! stops (and is restarted), so at most one replica acts at a time. On graceful shutdown the
//! Lease is released so the next replica takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

pub const LEASE_NAME: &str = "strand-operator";
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expired(spec: &LeaseSpec) -> bool {
    let (Some(renewed), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else { return true };
    let age = Timestamp::now().duration_since(renewed.0);
    age.as_secs() > i64::from(secs)
}

/// Tries once to take or keep the Lease for `identity`; whether this replica holds it now.
pub async fn try_acquire(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let secs = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
    match api.get_opt(LEASE_NAME).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity.into()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let mine = spec.holder_identity.as_deref() == Some(identity);
            let free = spec.holder_identity.as_deref().is_none_or(str::is_empty) || expired(spec);
            if !mine && !free {
                return Ok(false);
            }
            if !mine {
                spec.holder_identity = Some(identity.into());
                spec.acquire_time = Some(now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.renew_time = Some(now());
            spec.lease_duration_seconds = Some(secs);
            // The resourceVersion from the read makes this a compare-and-swap.
            match api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the Lease up if this replica holds it (graceful shutdown).
pub async fn release(api: &Api<Lease>, identity: &str) {
    if let Ok(Some(mut lease)) = api.get_opt(LEASE_NAME).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(identity)
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        let _ = api.replace(LEASE_NAME, &PostParams::default(), &lease).await;
    }
}
