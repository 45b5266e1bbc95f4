//! The receiver side: the listener on `--repl-addr`. For each connecting source it checks the
//! shared secret and whether the stream is admissible (BC or SI, supplementary or not, role),
//! compares histories — in the journal seqno space for BC, in the source family's space for
//! the SI stream that family feeds — and then either streams (receiver not ahead), rolls back
//! online first (receiver ahead, `autorollback`), resumes from the common point (SI,
//! `noresync`), or refuses and touches nothing ("rollback required"). Records are applied
//! through the writer and acknowledged once durable. One source at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::Context;
use super::history::{self, Plan};
use super::protocol::{
    self, Ack, Auth, Challenge, Hello, HistoryAnswer, Kind, Mode, ProtocolError, Refuse, SeedEnd,
    SeedRequest, Start, StreamsUpdate,
};
use super::si::{Resync, SiPlan};
use super::streams::{self, Negotiated, StreamError};
use crate::base::error_chain;
use crate::shutdown::Shutdown;
use crate::storage::journal::RecordKind;
use crate::storage::meta::{self, Role};
use crate::storage::seed::{Builder, Node, SeedHeader};
use crate::storage::writer::{ApplyMode, Marker, SeedExpectation};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A source sends at least a heartbeat every second; silence this long means it is gone.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts replication connections until shutdown.
pub async fn listen(ctx: Arc<Context>, listener: TcpListener, mut shutdown: Shutdown) {
    let active = Arc::new(AtomicBool::new(false));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.recv() => return,
        };
        let Ok((stream, peer)) = accepted else { continue };
        let ctx = ctx.clone();
        let active = active.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(&ctx, stream, peer, &active, shutdown).await {
                let message = error_chain(&e);
                match e {
                    ProtocolError::Auth => {
                        tracing::warn!(%peer, "refused a replication connection: wrong or missing credential")
                    }
                    ProtocolError::Closed => tracing::info!(%peer, "replication source disconnected"),
                    _ => tracing::warn!(%peer, error = %message, "replication connection ended"),
                }
            }
        });
    }
}

async fn refuse(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    code: &str,
    message: String,
    common: Option<u64>,
    receiver_seqno: Option<u64>,
) {
    let _ = protocol::write_json(
        wr,
        Kind::Refuse,
        &Refuse { code: code.into(), message, common, receiver_seqno, term: None },
    )
    .await;
}

/// Refuses a source whose term is below `seen`: a deposed primary. The refusal carries the
/// term, so the source learns it has been replaced and stops taking writes.
async fn refuse_stale(
    ctx: &Context,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    hello: &Hello,
    what: &str,
    seen: u64,
) {
    let message = format!(
        "{} offers {what} at term {}, but {} has seen term {seen}: {} is no longer its family's primary (it turns read-only); the stream must come from the current primary",
        hello.name,
        hello.term,
        ctx.store.meta().name,
        hello.name
    );
    tracing::warn!(source = %hello.name, term = hello.term, seen, "refused a stream from a deposed primary");
    ctx.metrics.replication_errors_total.with_label_values(&["stale_term"]).inc();
    ctx.replication.set_receiver(|s| s.last_error = Some(message.clone()));
    let _ = protocol::write_json(
        wr,
        Kind::Refuse,
        &Refuse { code: "stale_term".into(), message, common: None, receiver_seqno: None, term: Some(seen) },
    )
    .await;
}

async fn timed<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, ProtocolError>>,
) -> Result<T, ProtocolError> {
    tokio::time::timeout(d, f).await.map_err(|_| ProtocolError::other("timed out"))?
}

/// Clears the "one source at a time" flag when the connection ends, however it ends.
struct ActiveGuard<'a>(&'a AtomicBool);
impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn serve(
    ctx: &Arc<Context>,
    stream: TcpStream,
    peer: SocketAddr,
    active: &AtomicBool,
    mut shutdown: Shutdown,
) -> Result<(), ProtocolError> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let hello: Hello = timed(HANDSHAKE_TIMEOUT, protocol::expect(&mut rd, Kind::Hello)).await?;
    if !crate::version::protocol_compatible(hello.protocol) {
        let message = crate::version::protocol_refusal(&hello.name, &hello.binary_version, hello.protocol);
        tracing::warn!(source = %hello.name, %message, "refused a replication stream");
        ctx.metrics.replication_errors_total.with_label_values(&["protocol"]).inc();
        ctx.replication.set_receiver(|s| s.last_error = Some(message.clone()));
        refuse(&mut wr, "protocol", message.clone(), None, None).await;
        return Err(ProtocolError::Version(message));
    }
    let Some(secret) = ctx.replication.secret.clone() else {
        refuse(
            &mut wr,
            "no_secret",
            "this instance has no --repl-secret-file; it accepts no replication".into(),
            None,
            None,
        )
        .await;
        return Err(ProtocolError::Auth);
    };
    let meta = ctx.store.meta();
    let nonce_r = protocol::nonce();
    let challenge = Challenge {
        protocol: protocol::PROTOCOL_VERSION,
        binary_version: crate::VERSION.to_owned(),
        name: meta.name.clone(),
        creation_id: meta.creation_id.clone(),
        nonce: nonce_r.clone(),
        proof: protocol::proof(&secret, "strand-receiver", &hello.nonce, &nonce_r),
    };
    protocol::write_json(&mut wr, Kind::Challenge, &challenge).await?;
    let auth: Auth = timed(HANDSHAKE_TIMEOUT, protocol::expect(&mut rd, Kind::Auth)).await?;
    if !protocol::verify(&secret, "strand-source", &nonce_r, &hello.nonce, &auth.proof) {
        ctx.metrics.replication_errors_total.with_label_values(&["unauthorized"]).inc();
        refuse(&mut wr, "unauthorized", "wrong replication secret".into(), None, None).await;
        return Err(ProtocolError::Auth);
    }
    if hello.mode == Mode::Query {
        let answer = HistoryAnswer {
            history: meta.history.clone(),
            seqno: ctx.store.committed_seqno(),
            supplementary: meta.supplementary,
        };
        protocol::write_json(&mut wr, Kind::History, &answer).await?;
        return Ok(());
    }

    let Some(config) = meta.receiver.clone() else {
        refuse(
            &mut wr,
            "receiver_not_started",
            format!("{} has no receiver started; run `ctl receiver start` on it", meta.name),
            None,
            None,
        )
        .await;
        return Ok(());
    };
    if let Err((code, message)) = admissible(&meta, ctx.store.role(), &config, &hello) {
        tracing::warn!(source = %hello.name, code, %message, "refused a replication stream");
        ctx.metrics.replication_errors_total.with_label_values(&[code]).inc();
        ctx.replication.set_receiver(|s| s.last_error = Some(message.clone()));
        refuse(&mut wr, code, message, None, None).await;
        return Ok(());
    }
    if !check_term(ctx, &mut wr, &hello, &auth, config.si).await? {
        return Ok(());
    }
    if active.swap(true, Ordering::AcqRel) {
        let current = ctx.replication.receiver_status().source.unwrap_or_default();
        let what = if config.si { "an SI stream" } else { "a BC stream" };
        refuse(
            &mut wr,
            "busy",
            format!(
                "{} already receives {what} from {current}; an instance receives one stream at a time",
                meta.name
            ),
            None,
            None,
        )
        .await;
        return Ok(());
    }
    let _guard = ActiveGuard(active);
    let mut generation = ctx.replication.receiver_generation.subscribe();
    generation.borrow_and_update();
    let negotiated =
        if config.si && config.seed && streams::stream_of(&ctx.store.meta(), &auth.history).is_none() {
            // The family's first stream, into an instance that may be seeded: from its snapshot.
            seed_si(ctx, &mut rd, &mut wr, &hello, &auth, &mut generation, &mut shutdown).await?
        } else if config.si {
            negotiate_si(ctx, &mut wr, &hello, &auth, &config).await?
        } else {
            negotiate_bc(ctx, &mut wr, &hello, &auth, &config).await?
        };
    let Some((mut from, rolled_back_to, mode)) = negotiated else { return Ok(()) };
    if !config.si && auth.journal_first > from {
        // The source's journal begins past what this instance needs (config.seed holds, or
        // negotiation would have refused): replace the data with a snapshot of the source's.
        from = seed(ctx, &mut rd, &mut wr, &hello, from, &mut generation, &mut shutdown).await? + 1;
    }
    // A new member's first source (another family's history until now): negotiation has made
    // this instance part of the source's family, whose term it now takes.
    if !config.si && auth_term_pending(ctx, &hello, &auth) {
        let term = hello.term;
        ctx.writer
            .update_meta(Box::new(move |m, _| {
                m.term = m.term.max(term);
                Ok(None)
            }))
            .await
            .map_err(|e| ProtocolError::other(e.to_string()))?;
    }
    protocol::write_json(&mut wr, Kind::Start, &Start { from, rolled_back_to }).await?;
    let stream = match &mode {
        ApplyMode::Si { stream } => Some(*stream),
        ApplyMode::Bc { .. } => None,
    };
    tracing::info!(source = %hello.name, %peer, from, ?stream, "receiving");
    if stream.is_none() {
        ctx.store.set_source_name(Some(hello.name.clone()));
    }
    ctx.replication.set_receiver(|s| {
        s.state = "streaming".into();
        s.source = Some(hello.name.clone());
        s.stream = stream;
        s.common_seqno = None;
        s.last_error = None;
        s.applied_seqno = from - 1;
    });
    let result = receive(ctx, &mut rd, &mut wr, &auth, mode, &mut generation, &mut shutdown).await;
    ctx.replication.set_receiver(|s| {
        s.state = match &result {
            Ok(()) | Err(ProtocolError::Closed) => "idle".into(),
            Err(_) => "error".into(),
        };
        if let Err(e) = &result {
            s.last_error = Some(error_chain(e));
        }
    });
    result
}

/// Whether this instance may receive the stream `hello` offers, given its configuration.
/// GT.M's rules: SI only into a supplementary instance and only from a non-supplementary one;
/// BC only between instances of the same kind; the receiver's mode must match the source's.
fn admissible(
    meta: &crate::storage::meta::InstanceMeta,
    role: Role,
    config: &crate::storage::meta::ReceiverConfig,
    hello: &Hello,
) -> Result<(), (&'static str, String)> {
    let (me, src) = (&meta.name, &hello.name);
    if hello.si && hello.supplementary {
        return Err((
            "supplementary_source",
            format!(
                "{src} is supplementary: a supplementary instance cannot source an SI stream (it can source BC)"
            ),
        ));
    }
    if hello.si && !meta.supplementary {
        return Err((
            "not_supplementary",
            format!("{me} is not supplementary; SI streams go only into supplementary instances"),
        ));
    }
    if hello.si != config.si {
        return Err(if hello.si {
            (
                "mode_mismatch",
                format!(
                    "{src} offers an SI stream but {me}'s receiver was started for BC; start it with `receiver start --si`"
                ),
            )
        } else {
            (
                "mode_mismatch",
                format!(
                    "{src} offers a BC stream but {me}'s receiver was started for SI (--si); start the source with --si, or restart the receiver without it"
                ),
            )
        });
    }
    if !hello.si && meta.supplementary != hello.supplementary {
        return Err(if meta.supplementary {
            (
                "supplementary_mismatch",
                format!(
                    "{me} is supplementary; from the non-supplementary {src} it can receive only an SI stream (source start --si)"
                ),
            )
        } else {
            (
                "supplementary_mismatch",
                format!(
                    "{src} is supplementary; its BC streams go only to supplementary instances, and {me} is not"
                ),
            )
        });
    }
    let wanted = if hello.si { Role::SupplementaryPrimary } else { Role::Secondary };
    if role != wanted {
        return Err((
            "wrong_role",
            format!("{me} is {}, but receiving this stream needs {}", role.as_str(), wanted.as_str()),
        ));
    }
    Ok(())
}

type Negotiation = Option<(u64, Option<u64>, ApplyMode)>;

/// BC: negotiate in this instance's journal seqno space; `None` when refused.
async fn negotiate_bc(
    ctx: &Arc<Context>,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    hello: &Hello,
    auth: &Auth,
    config: &crate::storage::meta::ReceiverConfig,
) -> Result<Negotiation, ProtocolError> {
    let meta = ctx.store.meta();
    let seqno = ctx.store.committed_seqno();
    let plan = history::plan(&meta.history, seqno, &auth.history, auth.seqno);
    let wanted = match plan {
        Plan::Stream { from } => from,
        Plan::RollbackRequired { common, .. } => common + 1,
    };
    // A receiver that may be seeded is seeded after the plan below (a rollback first, if it
    // holds what the source does not); one that may not is refused before anything changes.
    if !(config.seed && auth.snapshots) && source_lacks(ctx, wr, hello, auth, wanted).await {
        return Ok(None);
    }
    let mut rolled_back_to = None;
    let from = match plan {
        Plan::Stream { from } => from,
        Plan::RollbackRequired { common, receiver_seqno } if !config.autorollback => {
            let message = format!(
                "{} holds seqnos {}..={receiver_seqno} that {} does not have (common point {common}); roll back with `ctl rollback --to-seqno {common}` or start the receiver with --autorollback",
                meta.name,
                common + 1,
                hello.name
            );
            rollback_required(ctx, wr, hello, common, receiver_seqno, message).await;
            return Ok(None);
        }
        Plan::RollbackRequired { common, receiver_seqno } => {
            let reason = format!(
                "autorollback: source {} does not have seqnos {}..={receiver_seqno}",
                hello.name,
                common + 1
            );
            if !roll_back(ctx, wr, common, false, reason, receiver_seqno).await? {
                return Ok(None);
            }
            rolled_back_to = Some(common);
            common + 1
        }
    };
    Ok(Some((from, rolled_back_to, ApplyMode::Bc { source_streams: auth.streams.clone() })))
}

/// SI: negotiate the stream the source's family feeds, in that family's seqno space.
async fn negotiate_si(
    ctx: &Arc<Context>,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    hello: &Hello,
    auth: &Auth,
    config: &crate::storage::meta::ReceiverConfig,
) -> Result<Negotiation, ProtocolError> {
    let resync = match (config.autorollback, config.noresync) {
        (true, _) => Resync::Autorollback,
        (false, true) => Resync::NoResync,
        (false, false) => Resync::Refuse,
    };
    let negotiated = match streams::negotiate(ctx, &hello.name, &auth.history, auth.seqno, resync).await {
        Ok(n) => n,
        Err(e) => {
            let message = error_chain(&e);
            tracing::warn!(source = %hello.name, error = %message, "cannot negotiate the SI stream");
            ctx.replication.set_receiver(|s| s.last_error = Some(message.clone()));
            let code = match &e {
                StreamError::NoHistory { .. } => "no_history",
                StreamError::Store(s) if s.code() == "needs_reseed" => {
                    needs_reseed_here(ctx, &message);
                    "needs_reseed"
                }
                _ => "negotiation_failed",
            };
            refuse(wr, code, message, None, None).await;
            return Ok(None);
        }
    };
    let Negotiated { stream, family, plan } = negotiated;
    let name = ctx.store.meta().name;
    let wanted = match plan {
        SiPlan::Stream { from } | SiPlan::Rollback { from, .. } | SiPlan::NoResync { from } => Some(from),
        SiPlan::Refuse { .. } | SiPlan::Reseed { .. } => None,
    };
    if let Some(wanted) = wanted
        && source_lacks(ctx, wr, hello, auth, wanted).await
    {
        return Ok(None);
    }
    let mut rolled_back_to = None;
    let from = match plan {
        SiPlan::Stream { from } => from,
        SiPlan::Refuse { common, receiver_stream_seqno } => {
            let message = format!(
                "{name} holds stream {stream} ({family}) seqnos {}..={receiver_stream_seqno} that {} does not have (common point {common}); roll back with `ctl rollback --fetchresync HOST:PORT` (the source's replication address), or start the receiver with --autorollback or --noresync",
                common + 1,
                hello.name
            );
            rollback_required(ctx, wr, hello, common, receiver_stream_seqno, message).await;
            return Ok(None);
        }
        SiPlan::Reseed { common, base } => {
            let message = format!(
                "{name}'s stream {stream} ({family}) began from a backup or a snapshot at family seqno {base}, but {} agrees only up to {common}: no rollback can take its transactions off; re-create {name} from a newer backup, or use --noresync",
                hello.name
            );
            rollback_required(ctx, wr, hello, common, base, message).await;
            return Ok(None);
        }
        SiPlan::Rollback { to_seqno, from } => {
            let reason = format!(
                "autorollback: {} does not have stream {stream} ({family}) seqnos from {from} on",
                hello.name
            );
            let last = ctx.store.committed_seqno();
            if !roll_back(ctx, wr, to_seqno, true, reason, last).await? {
                return Ok(None);
            }
            rolled_back_to = Some(to_seqno);
            from
        }
        SiPlan::NoResync { from } => {
            let common = from - 1;
            let result = ctx
                .writer
                .update_meta(Box::new(move |meta, _| {
                    let state = meta
                        .streams
                        .iter_mut()
                        .find(|s| s.stream == stream)
                        .ok_or_else(|| format!("stream {stream} vanished during negotiation"))?;
                    state.history.retain(|h| h.start_seqno <= common);
                    Ok(Some(Marker { kind: RecordKind::StreamResync, stream, stream_seqno: common }))
                }))
                .await;
            if let Err(e) = result {
                refuse(wr, "noresync_failed", e.to_string(), Some(common), None).await;
                return Err(ProtocolError::other(e.to_string()));
            }
            tracing::warn!(source = %hello.name, stream, common, "noresync: resuming from the common point without rolling back");
            from
        }
    };
    Ok(Some((from, rolled_back_to, ApplyMode::Si { stream })))
}

/// SI, the first stream of the source's family into a receiver started with `--seed`: when
/// this instance holds nothing of its own (no key, no transaction, no other stream), the
/// source's snapshot becomes its data and the family's stream begins at the snapshot's seqno
/// (storage::seed, [`crate::storage::seed::Joining::Si`]); otherwise refused, changing nothing.
async fn seed_si(
    ctx: &Arc<Context>,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    hello: &Hello,
    auth: &Auth,
    generation: &mut tokio::sync::watch::Receiver<u64>,
    shutdown: &mut Shutdown,
) -> Result<Negotiation, ProtocolError> {
    let meta = ctx.store.meta();
    let refusal = match ctx.store.own_data() {
        Some(holds) => Some((
            "not_empty",
            format!(
                "{} already holds {holds}; a snapshot of {} would replace it: join {}'s family from a backup of it loaded into {} (receiver start --si --updateresync BACKUP)",
                meta.name, hello.name, hello.name, meta.name
            ),
        )),
        None if !auth.si_snapshots => Some((
            "snapshot_unsupported",
            format!(
                "{}'s binary cannot send a snapshot for an SI stream: join its family from a backup of it (receiver start --si --updateresync BACKUP)",
                hello.name
            ),
        )),
        None if crate::storage::meta::family_root(&auth.history).is_none() => {
            Some(("no_history", format!("{} sent no history records", hello.name)))
        }
        None => None,
    };
    if let Some((code, message)) = refusal {
        tracing::warn!(source = %hello.name, code, %message, "cannot seed the SI stream");
        ctx.metrics.replication_errors_total.with_label_values(&[code]).inc();
        ctx.replication.set_receiver(|s| s.last_error = Some(message.clone()));
        refuse(wr, code, message, None, None).await;
        return Ok(None);
    }
    let seqno = seed(ctx, rd, wr, hello, 1, generation, shutdown).await?;
    let stream = streams::stream_of(&ctx.store.meta(), &auth.history)
        .map(|s| s.stream)
        .ok_or_else(|| ProtocolError::other("the seeded instance holds no stream of the source's family"))?;
    tracing::info!(source = %hello.name, stream, seqno, "SI stream seeded from a snapshot");
    Ok(Some((seqno + 1, None, ApplyMode::Si { stream })))
}

/// Compares the source's term with the highest this instance has seen for the source's
/// family — its own term for BC (when the source is of its family), the stream's for SI —
/// before anything else happens (a busy receiver included, so a deposed primary learns at
/// once). Lower: refused (`false`). Higher: adopted.
async fn check_term(
    ctx: &Context,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    hello: &Hello,
    auth: &Auth,
    si: bool,
) -> Result<bool, ProtocolError> {
    let meta = ctx.store.meta();
    let (seen, what) = if si {
        match streams::stream_of(&meta, &auth.history) {
            Some(s) => (s.term, format!("stream {} ({})", s.stream, s.family)),
            // A first connection of a family: nothing seen yet (negotiation will say more).
            None => return Ok(true),
        }
    } else {
        // Terms are a family's own: a source of another family (a new member's first source,
        // or a stale address now held by someone else) is not compared — negotiation decides.
        if !same_family(&meta.history, &auth.history) {
            return Ok(true);
        }
        (meta.term, "a BC stream".to_owned())
    };
    if hello.term < seen {
        refuse_stale(ctx, wr, hello, &what, seen).await;
        return Ok(false);
    }
    if hello.term > seen {
        let (term, family) =
            (hello.term, meta::family_root(&auth.history).map(|r| r.root_creation_id.clone()));
        ctx.writer
            .update_meta(Box::new(move |m, _| {
                if si {
                    if let Some(s) = m.streams.iter_mut().find(|s| Some(&s.family_id) == family.as_ref()) {
                        s.term = s.term.max(term);
                    }
                } else {
                    m.term = m.term.max(term);
                }
                Ok(None)
            }))
            .await
            .map_err(|e| ProtocolError::other(e.to_string()))?;
    }
    Ok(true)
}

/// Whether the source's term is still to be taken after negotiation (it was not compared
/// before, the histories being of different roots).
fn auth_term_pending(ctx: &Context, hello: &Hello, auth: &Auth) -> bool {
    let meta = ctx.store.meta();
    hello.term > meta.term && !same_family(&meta.history, &auth.history)
}

/// Whether two histories are of one family (the same root record).
fn same_family(a: &[crate::storage::meta::HistoryRecord], b: &[crate::storage::meta::HistoryRecord]) -> bool {
    let root =
        |h: &[crate::storage::meta::HistoryRecord]| meta::family_root(h).map(|r| r.root_creation_id.clone());
    root(a) == root(b)
}

async fn rollback_required(
    ctx: &Arc<Context>,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    hello: &Hello,
    common: u64,
    receiver_seqno: u64,
    message: String,
) {
    tracing::warn!(source = %hello.name, common, receiver_seqno, "rollback required; not receiving");
    ctx.metrics.replication_errors_total.with_label_values(&["rollback_required"]).inc();
    ctx.replication.set_receiver(|s| {
        s.state = "rollback_required".into();
        s.source = Some(hello.name.clone());
        s.common_seqno = Some(common);
        s.last_error = Some(message.clone());
    });
    refuse(wr, "rollback_required", message, Some(common), Some(receiver_seqno)).await;
}

/// Whether the source's journal no longer reaches back to `from`, the first seqno this
/// receiver needs: then it is refused with `needs_reseed`, before anything changes here.
async fn source_lacks(
    ctx: &Arc<Context>,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    hello: &Hello,
    auth: &Auth,
    from: u64,
) -> bool {
    if auth.journal_first == 0 || from >= auth.journal_first {
        return false;
    }
    let me = ctx.store.meta().name;
    let how = if hello.si {
        // An SI stream already begun: its own transactions would be lost to a snapshot.
        format!(
            "re-create {me} from a newer backup of {} and start its receiver with --updateresync",
            hello.name
        )
    } else if auth.snapshots {
        format!("re-seed {me}: start its receiver with --seed to take a snapshot of {}", hello.name)
    } else {
        format!("{}'s binary cannot send a snapshot: re-seed {me} from a backup of it", hello.name)
    };
    let message = format!(
        "{me} needs {}'s journal from seqno {from}, but it begins at {} (older records were trimmed by its journal retention limit); {how}",
        hello.name, auth.journal_first
    );
    ctx.replication.set_receiver(|s| s.source = Some(hello.name.clone()));
    needs_reseed_here(ctx, &message);
    refuse(wr, "needs_reseed", message, None, None).await;
    true
}

/// Says loudly that this receiver cannot go on without being re-seeded.
fn needs_reseed_here(ctx: &Context, message: &str) {
    tracing::error!(%message, "this instance needs re-seeding; not receiving");
    ctx.metrics.replication_errors_total.with_label_values(&["needs_reseed"]).inc();
    ctx.replication.set_receiver(|s| {
        s.state = "needs_reseed".into();
        s.last_error = Some(message.to_owned());
    });
}

/// Rolls back before streaming; `false` (after telling the source) if that failed.
async fn roll_back(
    ctx: &Arc<Context>,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    to: u64,
    new_epoch: bool,
    reason: String,
    receiver_seqno: u64,
) -> Result<bool, ProtocolError> {
    match ctx.writer.rollback(to, new_epoch, reason).await {
        Ok(done) => {
            if let Some(done) = done {
                ctx.metrics.rollbacks_total.inc();
                ctx.metrics.rolled_back_transactions_total.inc_by(done.transactions);
            }
            Ok(true)
        }
        Err(e) => {
            let code = if e.code() == "needs_reseed" {
                needs_reseed_here(ctx, &e.to_string());
                "needs_reseed"
            } else {
                "rollback_failed"
            };
            refuse(wr, code, e.to_string(), Some(to), Some(receiver_seqno)).await;
            Err(ProtocolError::other(e.to_string()))
        }
    }
}

/// Asks the source for a snapshot, builds it into a new database file beside the instance's
/// and has the writer swap it in (storage::seed); the source's seqno the snapshot reflects
/// (for BC, the seqno the instance then holds). A seeding cut short (the connection, a stop, a
/// full disk) leaves the instance's data as it was.
#[allow(clippy::too_many_arguments)]
async fn seed(
    ctx: &Arc<Context>,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    hello: &Hello,
    wanted: u64,
    generation: &mut tokio::sync::watch::Receiver<u64>,
    shutdown: &mut Shutdown,
) -> Result<u64, ProtocolError> {
    let started = std::time::Instant::now();
    // What the swap may replace: this instance as it is now, nothing committed or changed after.
    let expected = SeedExpectation::of(&ctx.store);
    // Receiving may be cut short by a stop; completing the file and swapping it in may not
    // (the writer must never be handed a file that is being removed).
    let received = tokio::select! {
        r = receive_snapshot(ctx, rd, wr, hello, wanted, started) => r,
        _ = generation.changed() => Err(ProtocolError::other("the receiver was stopped during seeding")),
        _ = shutdown.recv() => Err(ProtocolError::other("shutting down during seeding")),
    };
    let result = match received {
        Ok((builder, header)) => {
            let seqno = header.seqno;
            install(ctx, builder, header, expected).await.map(|_| seqno)
        }
        Err(e) => Err(e),
    };
    match &result {
        Ok(seqno) => {
            ctx.metrics.replication_seeds_total.with_label_values(&["installed"]).inc();
            let seconds = started.elapsed().as_secs_f64();
            ctx.replication.set_receiver(|s| {
                if let Some(p) = &mut s.snapshot {
                    p.installed = true;
                    p.seconds = seconds;
                }
            });
            tracing::info!(source = %hello.name, seqno, seconds, "seeded from a snapshot");
        }
        Err(e) => {
            ctx.metrics.replication_seeds_total.with_label_values(&["failed"]).inc();
            // Whatever the builder left is removed here or at the next start; the instance's
            // own file was never touched.
            if let Err(e) = crate::storage::seed::remove_partial(ctx.store.data_dir()) {
                tracing::warn!(error = %error_chain(&e), "cannot remove an unfinished seeding's file");
            }
            let message = format!("seeding from {} failed: {}", hello.name, error_chain(e));
            tracing::warn!(%message, "seeding failed");
            ctx.replication.set_receiver(|s| {
                s.state = "error".into();
                s.last_error = Some(message.clone());
            });
        }
    }
    result
}

/// Receives a whole snapshot into a new file (not yet complete: see [`install`]).
async fn receive_snapshot(
    ctx: &Arc<Context>,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    hello: &Hello,
    wanted: u64,
    started: std::time::Instant,
) -> Result<(Builder, SeedHeader), ProtocolError> {
    let io = |e: crate::storage::StoreError| ProtocolError::other(error_chain(&e));
    tracing::warn!(source = %hello.name, wanted, "seeding from the source's snapshot (this instance's data is replaced)");
    protocol::write_json(wr, Kind::Seed, &SeedRequest { wanted }).await?;
    ctx.replication.set_receiver(|s| {
        s.state = "seeding".into();
        s.source = Some(hello.name.clone());
        s.last_error = None;
        s.snapshot = None;
    });
    let header: SeedHeader = timed(SILENCE_TIMEOUT, protocol::expect(rd, Kind::SeedHeader)).await?;
    if !crate::storage::meta::FORMAT_VERSIONS_SUPPORTED.contains(&header.format_version) {
        let message = format!(
            "{}'s data is at format {}, which strand {} cannot hold; seed it with a newer binary",
            hello.name,
            header.format_version,
            crate::VERSION
        );
        refuse(wr, "format_version", message.clone(), None, None).await;
        return Err(ProtocolError::Version(message));
    }
    ctx.replication.set_receiver(|s| {
        s.snapshot =
            Some(super::SeedProgress { seqno: header.seqno, nodes_total: header.nodes, ..Default::default() })
    });
    // The file is written on a blocking thread while the next chunks arrive.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Node>>(4);
    let data_dir = ctx.store.data_dir().to_owned();
    let builder = tokio::task::spawn_blocking(move || {
        let mut builder = Builder::create(&data_dir)?;
        while let Some(chunk) = rx.blocking_recv() {
            builder.add(&chunk)?;
        }
        Ok::<_, crate::storage::StoreError>(builder)
    });
    let mut end: Option<SeedEnd> = None;
    loop {
        let (kind, payload) = timed(SILENCE_TIMEOUT, protocol::read_frame(rd)).await?;
        match kind {
            Kind::SeedNodes => {
                let nodes = protocol::decode_nodes(&payload)?;
                let n = nodes.len() as u64;
                if tx.send(nodes).await.is_err() {
                    // The builder stopped: its error is reported below.
                    break;
                }
                ctx.metrics.replication_seed_nodes_received_total.inc_by(n);
                ctx.metrics.replication_bytes_applied_total.inc_by(payload.len() as u64);
                ctx.replication.set_receiver(|s| {
                    if let Some(p) = &mut s.snapshot {
                        p.nodes_received += n;
                        p.seconds = started.elapsed().as_secs_f64();
                    }
                });
            }
            Kind::SeedEnd => {
                end = Some(protocol::parse(kind, &payload)?);
                break;
            }
            // A rate-limited source says it is there between chunks.
            Kind::Heartbeat => {}
            got => return Err(ProtocolError::Unexpected { expected: Kind::SeedNodes, got }),
        }
    }
    drop(tx);
    let builder = builder.await.map_err(ProtocolError::other)?.map_err(io)?;
    let end = end.ok_or_else(|| ProtocolError::other("the seeded file's writer stopped"))?;
    // What arrived is counted against the header when the file is completed.
    if end.nodes != header.nodes {
        return Err(ProtocolError::Malformed {
            kind: Kind::SeedEnd,
            reason: format!(
                "the snapshot promised {} nodes, the source says it sent {}",
                header.nodes, end.nodes
            ),
        });
    }
    Ok((builder, header))
}

/// Completes the seeded file durably and has the writer swap it in; the seqno it holds.
async fn install(
    ctx: &Arc<Context>,
    builder: Builder,
    header: SeedHeader,
    expected: SeedExpectation,
) -> Result<u64, ProtocolError> {
    let joining = expected.joining();
    let (path, header) =
        tokio::task::spawn_blocking(move || builder.finish(&header, joining).map(|path| (path, header)))
            .await
            .map_err(ProtocolError::other)?
            .map_err(|e| ProtocolError::other(error_chain(&e)))?;
    ctx.writer.install_seed(path, header, expected).await.map_err(|e| ProtocolError::other(e.to_string()))
}

/// Most records merged into one durable apply when frames queue up (receiver behind).
const APPLY_RECORDS_MAX: usize = 16 * 1000;
/// The same for an SI stream, whose applies stop the instance's own writes while they run
/// (each is a direct change of the file).
const APPLY_RECORDS_MAX_SI: usize = 2 * 1000;
/// Most frame bytes merged into one apply: what an apply adds to the overlay past its bound.
const APPLY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Received frames taken for one apply.
#[derive(Default)]
struct Batch {
    records: Vec<crate::storage::journal::Record>,
    bytes: usize,
    frames: usize,
}

impl Batch {
    /// Takes one frame: its records, or the source's stream states (BC), or a heartbeat.
    fn take(&mut self, (kind, payload): (Kind, Vec<u8>), mode: &mut ApplyMode) -> Result<(), ProtocolError> {
        self.frames += 1;
        match kind {
            Kind::Records => {
                self.bytes += payload.len();
                self.records.extend(protocol::decode_records(&payload)?);
            }
            Kind::Heartbeat => {}
            Kind::Streams => {
                let update: StreamsUpdate = serde_json::from_slice(&payload)
                    .map_err(|e| ProtocolError::Malformed { kind: Kind::Streams, reason: e.to_string() })?;
                if let ApplyMode::Bc { source_streams } = mode {
                    *source_streams = update.streams;
                }
            }
            kind => return Err(ProtocolError::Unexpected { expected: Kind::Records, got: kind }),
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    ctx: &Arc<Context>,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    auth: &Auth,
    mut mode: ApplyMode,
    generation: &mut tokio::sync::watch::Receiver<u64>,
    shutdown: &mut Shutdown,
) -> Result<(), ProtocolError> {
    // Frames are read by their own loop into a bounded queue, so that while one apply is being
    // made durable the next frames arrive, and a receiver that fell behind merges everything
    // queued into one commit instead of paying one fsync per frame.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(Kind, Vec<u8>), ProtocolError>>(64);
    let reader = async {
        loop {
            let frame = tokio::time::timeout(SILENCE_TIMEOUT, protocol::read_stream_frame(rd))
                .await
                .map_err(|_| ProtocolError::other("source silent for too long"))
                .and_then(|r| r);
            let failed = frame.is_err();
            if tx.send(frame).await.is_err() {
                return;
            }
            if failed {
                // The applier reports the error (with its cause); nothing more to read.
                std::future::pending::<()>().await;
            }
        }
    };
    let applier = async {
        // When the last apply started: the next one waits until `apply_interval` past it for
        // more frames, unless a full frame's worth (records or bytes) is there (a receiver
        // catching up never waits).
        let interval = ctx.replication.apply_interval;
        let mut last_apply: Option<tokio::time::Instant> = None;
        loop {
            let first = tokio::select! {
                f = rx.recv() => f,
                _ = generation.changed() => return Ok(()),
                _ = shutdown.recv() => return Ok(()),
            };
            let Some(first) = first else { return Err(ProtocolError::Closed) };
            let mut batch = Batch::default();
            // The stream broke: the whole frames received before are applied first.
            let mut ended: Option<ProtocolError> = None;
            let mut next = Some(first);
            while let Some(frame) = next.take() {
                match frame {
                    Ok(frame) => batch.take(frame, &mut mode)?,
                    Err(e) => ended = Some(e),
                }
                let records_max = match mode {
                    ApplyMode::Bc { .. } => APPLY_RECORDS_MAX,
                    ApplyMode::Si { .. } => APPLY_RECORDS_MAX_SI,
                };
                if batch.records.len() < records_max && batch.bytes < APPLY_BYTES_MAX && ended.is_none() {
                    next = rx.try_recv().ok();
                }
            }
            if let Some(deadline) = last_apply.filter(|_| !interval.is_zero()).map(|t| t + interval)
                && !batch.records.is_empty()
            {
                let sleep = tokio::time::sleep_until(deadline);
                tokio::pin!(sleep);
                while batch.records.len() < protocol::BATCH_RECORDS_MAX
                    && batch.bytes < protocol::BATCH_BYTES_TARGET
                    && ended.is_none()
                {
                    tokio::select! {
                        f = rx.recv() => match f {
                            Some(Ok(frame)) => batch.take(frame, &mut mode)?,
                            Some(Err(e)) => ended = Some(e),
                            None => ended = Some(ProtocolError::Closed),
                        },
                        () = &mut sleep => break,
                        _ = generation.changed() => return Ok(()),
                        _ = shutdown.recv() => return Ok(()),
                    }
                }
            }
            let Batch { records, bytes, frames } = batch;
            if records.is_empty()
                && let Some(e) = ended
            {
                return Err(e);
            }
            tracing::debug!(frames, records = records.len(), queued = rx.len(), "applying");
            let applied = if records.is_empty() {
                match &mode {
                    ApplyMode::Bc { .. } => ctx.store.committed_seqno(),
                    ApplyMode::Si { stream } => {
                        ctx.store.stream_seqnos().get(usize::from(*stream)).copied().unwrap_or(0)
                    }
                }
            } else {
                let n = records.len() as u64;
                let failover = records.iter().rev().find(|r| r.kind == RecordKind::Failover).map(|r| r.seqno);
                let started = std::time::Instant::now();
                last_apply = Some(tokio::time::Instant::now());
                let applied = ctx
                    .writer
                    .apply(records, auth.history.clone(), mode.clone())
                    .await
                    .map_err(|e| ProtocolError::other(e.to_string()))?;
                ctx.metrics.replication_apply_duration_seconds.observe(started.elapsed().as_secs_f64());
                ctx.metrics.replication_records_applied_total.inc_by(n);
                ctx.metrics.replication_bytes_applied_total.inc_by(bytes as u64);
                ctx.replication.set_receiver(|s| {
                    s.applied_seqno = applied;
                    if failover.is_some() {
                        s.failover_seqno = failover;
                    }
                });
                if let Some(seqno) = failover {
                    tracing::info!(seqno, "received a failover record: the primary has handed over");
                }
                applied
            };
            if let Some(e) = ended {
                return Err(e);
            }
            protocol::write_json(wr, Kind::Ack, &Ack { seqno: applied }).await?;
        }
    };
    tokio::select! {
        () = reader => Err(ProtocolError::Closed),
        r = applier => r,
    }
}
