//! SI streams on a running instance: which stream a source family feeds, allocating and
//! reusing stream numbers, and running the pure per-stream plans of [`super::si`] against this
//! instance's journal. Used by the receiver and by `rollback --fetchresync`.

use super::Context;
use super::history;
use super::si::{self, Resync, SiPlan};
use crate::storage::StoreError;
use crate::storage::journal::{RecordKind, STREAMS_MAX};
use crate::storage::meta::{self, HistoryRecord, InstanceMeta, StreamState};

/// Why a family's stream cannot be negotiated.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "{instance} has no history for the family of {peer} (root {family}); start its receiver with --seed (the source's snapshot becomes its data, while it holds none of its own), or once with --updateresync BACKUP, a backup of a member of that family loaded into {instance}"
    )]
    NoHistory { instance: String, peer: String, family: String },
    #[error("{peer} sent no history records")]
    NoFamily { peer: String },
    #[error("reading the journal for negotiation failed")]
    Store(#[from] StoreError),
    #[error("negotiation task failed: {0}")]
    Task(String),
}

/// The stream of `meta` that the family of `history` feeds, if any.
pub fn stream_of<'m>(meta: &'m InstanceMeta, history: &[HistoryRecord]) -> Option<&'m StreamState> {
    let root = meta::family_root(history)?;
    meta.streams.iter().find(|s| s.family_id == root.root_creation_id && s.family == root.root_name)
}

/// Picks the stream number for a new source family (`receiver start --updateresync`): the
/// lowest free one of 1..=15; when all are in use, the one fed by family `reuse` (GT.M
/// `-reuse`), whose record is then replaced.
pub fn allocate(meta: &InstanceMeta, root: &HistoryRecord, reuse: Option<&str>) -> Result<u8, String> {
    if let Some(s) = meta.streams.iter().find(|s| s.family_id == root.root_creation_id) {
        return Err(format!(
            "{} already holds stream {} from family {}; --updateresync is only for the first start of a receiver for a family",
            meta.name, s.stream, s.family
        ));
    }
    let free = (1..STREAMS_MAX).find(|k| meta.streams.iter().all(|s| s.stream != *k));
    match (free, reuse) {
        (Some(k), None) => Ok(k),
        (Some(k), Some(_)) => Err(format!(
            "--reuse is for when all 15 SI streams are in use; stream {k} is free, so leave --reuse out"
        )),
        (None, Some(family)) => {
            meta.streams.iter().find(|s| s.family == family).map(|s| s.stream).ok_or_else(|| {
                format!("no stream of {} is fed by family {family:?}; in use: {}", meta.name, describe(meta))
            })
        }
        (None, None) => Err(format!(
            "all 15 SI streams of {} are in use ({}); name the family whose stream to reuse with --reuse FAMILY",
            meta.name,
            describe(meta)
        )),
    }
}

fn describe(meta: &InstanceMeta) -> String {
    meta.streams.iter().map(|s| format!("{}: {}", s.stream, s.family)).collect::<Vec<_>>().join(", ")
}

/// The stream a family feeds and what to do to receive it.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub stream: u8,
    pub family: String,
    pub plan: SiPlan,
}

/// Negotiates the stream of `source` (history, seqno) with this instance. Reads only the
/// journal suffix that can be in question, and nothing at all when the receiver is not ahead.
pub async fn negotiate(
    ctx: &Context,
    source: &str,
    source_history: &[HistoryRecord],
    source_seqno: u64,
    resync: Resync,
) -> Result<Negotiated, StreamError> {
    let meta = ctx.store.meta();
    let root =
        meta::family_root(source_history).ok_or_else(|| StreamError::NoFamily { peer: source.into() })?;
    let state = stream_of(&meta, source_history).ok_or_else(|| StreamError::NoHistory {
        instance: meta.name.clone(),
        peer: source.into(),
        family: root.root_name.clone(),
    })?;
    let stream = state.stream;
    let family = state.family_history();
    let last = ctx.store.stream_seqnos().get(usize::from(stream)).copied().unwrap_or(0);
    let common = history::common_point(&family, last, source_history, source_seqno);
    let plan = if common >= last {
        SiPlan::Stream { from: last + 1 }
    } else {
        let store = ctx.store.clone();
        let entries = tokio::task::spawn_blocking(move || {
            store.journal_view()?.entries_back_to(|r| {
                r.stream == stream && (r.kind == RecordKind::StreamBase || r.stream_seqno <= common)
            })
        })
        .await
        .map_err(|e| StreamError::Task(e.to_string()))??;
        si::plan(&entries, stream, &family, source_history, source_seqno, resync)
    };
    Ok(Negotiated { stream, family: state.family.clone(), plan })
}
