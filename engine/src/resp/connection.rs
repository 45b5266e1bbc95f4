//! One client connection: read requests, execute them in order, write replies.
//!
//! Pipelining: every complete request in the input buffer (up to
//! [`PIPELINE_COMMANDS_MAX`]) is taken at once. Writes are collected and handed to the writer
//! as one message, so a pipeline of N writes shares group commits instead of paying N fsyncs
//! (or N queue hand-offs) in a row; a read that follows queued writes first sends and waits
//! for them, so a client always reads its own writes. Replies go out in request order, in one
//! write, each only after what it reports is durable.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::cmd::{self, Class, Command, server};
use crate::base::{constant_time_eq, error_chain};
use crate::engine::Engine;
use crate::frame::{Frame, parse_request};
use crate::limits::{
    MULTI_BYTES_MAX, MULTI_COMMANDS_MAX, PIPELINE_COMMANDS_MAX, RESP_REQUEST_BYTES_MAX, SCAN_CURSORS_MAX,
    WATCH_KEYS_MAX,
};
use crate::shutdown::Shutdown;
use crate::storage::writer::{Abort, BlockingProgram, Committed, TxnFailure, TxnProgram, TxnRequest, Writer};

type Outcome = Result<Committed<Frame>, TxnFailure>;

/// How a writer outcome becomes a reply.
#[derive(Clone, Copy)]
enum Mode {
    Single,
    Exec,
}

/// A reply in request order: ready now, or waiting for the writer. Each remembers the
/// protocol version in force when its request was read (HELLO can change it mid-pipeline).
enum Slot {
    Ready(Frame, u8),
    Pending(oneshot::Receiver<Outcome>, Mode, u8),
}

/// What the connection does after a request.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

/// The socket and shutdown signal, for a command that waits (a blocked BLPOP) and must
/// notice the client leaving; bytes it reads meanwhile are the client's next requests.
struct Io<'a> {
    stream: &'a mut TcpStream,
    extra: Vec<u8>,
    shutdown: &'a mut Shutdown,
}

/// Why a blocked client stops waiting before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    Timeout,
    /// CLIENT UNBLOCK; `true`: answer with an error.
    Unblock(bool),
    /// The client left or the server stops.
    Leave,
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct State {
    id: u64,
    proto: u8,
    authenticated: bool,
    name: Option<Vec<u8>>,
    /// Commands queued since MULTI; `None` outside a transaction.
    multi: Option<Vec<Command>>,
    /// A command failed to queue: EXEC must refuse the transaction.
    multi_dirty: bool,
    /// Argument bytes queued since MULTI.
    multi_bytes: usize,
    /// Watched keys with the committed version at the time each was watched.
    watch: Vec<(Vec<u8>, u64)>,
    /// SCAN cursors: id → last key returned. Oldest first.
    cursors: VecDeque<(u64, Vec<u8>)>,
    next_cursor: u64,
    /// Seqno of this client's last committed write (WAIT waits for receivers to reach it).
    last_seqno: u64,
    /// Writes of the current pipeline not yet handed to the writer (their slots are pending).
    outbox: Vec<TxnRequest<Frame>>,
    /// The view the reads of the current pipeline share (with the key counts taken just
    /// before it, if a command of the batch needed them): every request of a batch was
    /// received before it was opened. A write in the batch drops it (the next read opens one
    /// that sees the write), and so does DBSIZE after reads that took no counts (it opens one
    /// with them): views only ever get newer within a batch.
    /// Expiry is judged at the time the view was opened.
    view: Option<ReadView>,
    /// This connection's handles on `strand_resp_commands_total`, by command name: a label
    /// lookup (hashing, a lock) per command showed in the profile of pipelined reads.
    counters: Vec<(&'static str, prometheus::IntCounter)>,
}

impl State {
    fn count(&mut self, engine: &Engine, name: &'static str) {
        // Names are the command table's own: the same pointer for the same command.
        if let Some((_, counter)) = self.counters.iter().find(|(n, _)| std::ptr::eq(*n, name)) {
            counter.inc();
            return;
        }
        let counter = engine.metrics.resp_commands_total.with_label_values(&[name]);
        counter.inc();
        self.counters.push((name, counter));
    }
}

/// What the reads of one pipeline share: the key counts (if a command needed them: DBSIZE),
/// then the snapshot opened after them, and the time expiry is judged at.
struct ReadView {
    counts: Option<crate::storage::KeyCounts>,
    snapshot: crate::storage::Snapshot,
    now_ms: u64,
}

pub async fn serve(engine: Arc<Engine>, mut stream: TcpStream, id: u64, mut shutdown: Shutdown) {
    let _ = stream.set_nodelay(true);
    let mut state = State {
        id,
        proto: 2,
        authenticated: engine.config.password.is_none(),
        name: None,
        multi: None,
        multi_dirty: false,
        multi_bytes: 0,
        watch: Vec::new(),
        cursors: VecDeque::new(),
        next_cursor: 1,
        last_seqno: 0,
        outbox: Vec::new(),
        view: None,
        counters: Vec::new(),
    };
    let mut input: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut output: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut slots: Vec<Slot> = Vec::new();
    let mut down = shutdown.signal();
    loop {
        let mut consumed = 0;
        let mut next = Next::Continue;
        while slots.len() < PIPELINE_COMMANDS_MAX && next == Next::Continue {
            match parse_request(input.get(consumed..).unwrap_or_default()) {
                Ok(None) => break,
                Ok(Some((args, used))) => {
                    consumed += used;
                    if !args.is_empty() {
                        let mut io = Io { stream: &mut stream, extra: Vec::new(), shutdown: &mut shutdown };
                        next = state.handle(&engine, args, &mut slots, &mut io).await;
                        let extra = io.extra;
                        input.extend_from_slice(&extra);
                    }
                }
                Err(e) => {
                    engine.metrics.resp_protocol_errors_total.inc();
                    tracing::debug!(client = id, error = %e, "closing connection on malformed input");
                    slots.push(Slot::Ready(Frame::error(format!("ERR {e}")), state.proto));
                    next = Next::Close;
                }
            }
        }
        input.drain(..consumed);
        state.view = None;
        state.flush(&engine).await;
        if !slots.is_empty() {
            output.clear();
            for slot in slots.drain(..) {
                let (frame, proto, seqno) = resolve(slot).await;
                state.last_seqno = state.last_seqno.max(seqno.unwrap_or(0));
                frame.encode(proto, &mut output);
            }
            if stream.write_all(&output).await.is_err() {
                return;
            }
        }
        if next == Next::Close {
            let _ = stream.shutdown().await;
            return;
        }
        if consumed > 0 && parse_request(&input).ok().flatten().is_some() {
            continue; // more complete requests are already buffered (pipeline window was full)
        }
        if input.len() >= RESP_REQUEST_BYTES_MAX {
            let mut out = Vec::new();
            Frame::error(format!("ERR request exceeds {RESP_REQUEST_BYTES_MAX} bytes"))
                .encode(state.proto, &mut out);
            let _ = stream.write_all(&out).await;
            engine.metrics.resp_protocol_errors_total.inc();
            return;
        }
        tokio::select! {
            read = stream.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = &mut down => return,
        }
    }
}

/// The reply of a slot, with the seqno its transaction committed at (if it wrote).
async fn resolve(slot: Slot) -> (Frame, u8, Option<u64>) {
    match slot {
        Slot::Ready(frame, proto) => (frame, proto, None),
        Slot::Pending(rx, mode, proto) => {
            let outcome = rx.await.unwrap_or_else(|_| {
                Err(TxnFailure::Store { code: "shutting_down", message: "server is shutting down".into() })
            });
            let seqno = match &outcome {
                Ok(Committed::Done { seqno, .. }) => *seqno,
                _ => None,
            };
            (outcome_frame(outcome, mode), proto, seqno)
        }
    }
}

fn outcome_frame(outcome: Outcome, mode: Mode) -> Frame {
    match (outcome, mode) {
        (Ok(Committed::Done { output, .. }), _) => output,
        (Ok(Committed::WatchConflict), _) => Frame::NullArray,
        (Err(TxnFailure::Aborted(message)), Mode::Single) => Frame::Error(message),
        (Err(TxnFailure::Aborted(message)), Mode::Exec) => {
            Frame::error(format!("EXECABORT Transaction rolled back because of: {message}"))
        }
        (Err(TxnFailure::Store { message, .. }), _) => Frame::error(format!("ERR {message}")),
    }
}

/// Waits for every queued write so that what follows sees it; returns the highest seqno
/// those writes committed at.
async fn settle(slots: &mut [Slot]) -> u64 {
    let mut last = 0;
    for slot in slots.iter_mut() {
        if let Slot::Pending(..) = slot {
            let taken = std::mem::replace(slot, Slot::Ready(Frame::Null, 2));
            let (frame, proto, seqno) = resolve(taken).await;
            last = last.max(seqno.unwrap_or(0));
            *slot = Slot::Ready(frame, proto);
        }
    }
    last
}

fn abort_frame(abort: Abort) -> Frame {
    match abort {
        Abort::Command(message) => Frame::Error(message),
        Abort::Store(e) => Frame::error(format!("ERR {}", error_chain(&e))),
    }
}

/// WAIT: until `replicas` receivers acknowledged `target` (this client's last write), or the
/// timeout (0 = no timeout) passes; answers how many did.
async fn wait(engine: &Engine, target: u64, replicas: usize, timeout_ms: u64) -> Frame {
    let deadline =
        (timeout_ms > 0).then(|| tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms));
    loop {
        let notified = engine.replication.acks.notified();
        let count = engine.replication.acknowledged(target, engine.store.pins_epoch());
        if count >= replicas {
            return Frame::Integer(i64::try_from(count).unwrap_or(i64::MAX));
        }
        match deadline {
            Some(d) => {
                if tokio::time::timeout_at(d, notified).await.is_err() {
                    let count = engine.replication.acknowledged(target, engine.store.pins_epoch());
                    return Frame::Integer(i64::try_from(count).unwrap_or(i64::MAX));
                }
            }
            None => notified.await,
        }
    }
}

impl State {
    async fn handle(
        &mut self,
        engine: &Arc<Engine>,
        args: Vec<Vec<u8>>,
        slots: &mut Vec<Slot>,
        io: &mut Io<'_>,
    ) -> Next {
        let proto = self.proto;
        // Version-mismatch mode: replication and admin only; every command an application
        // sends gets the same clear error naming both versions (client libraries pipeline
        // set-up commands, so the connection stays open for their replies).
        if let Some(mismatch) = engine.store.version_mismatch() {
            slots.push(Slot::Ready(Frame::Error(mismatch), proto));
            return if matches!(Command::parse(args), Ok((Command::Quit, _))) {
                Next::Close
            } else {
                Next::Continue
            };
        }
        let request_bytes: usize = args.iter().map(Vec::len).sum();
        let parsed = Command::parse(args);
        let (command, name) = match parsed {
            Ok(ok) => ok,
            Err(reply) => {
                if self.multi.is_some() {
                    self.multi_dirty = true;
                }
                slots.push(Slot::Ready(reply, proto));
                return Next::Continue;
            }
        };
        self.count(engine, name);
        if !self.authenticated
            && !matches!(command, Command::Auth { .. } | Command::Hello { .. } | Command::Quit)
        {
            slots.push(Slot::Ready(Frame::error("NOAUTH Authentication required."), proto));
            return Next::Continue;
        }
        if let Some(queue) = self.multi.as_mut()
            && !matches!(
                command,
                Command::Exec | Command::Discard | Command::Multi | Command::Watch(_) | Command::Quit
            )
        {
            let reply = if !command.queues_in_multi() {
                self.multi_dirty = true;
                Frame::error(format!(
                    "ERR Command not allowed inside a transaction ({} is not allowed inside MULTI)",
                    name.to_ascii_uppercase()
                ))
            } else if queue.len() >= MULTI_COMMANDS_MAX {
                self.multi_dirty = true;
                Frame::error(format!("ERR MULTI queue is full ({MULTI_COMMANDS_MAX} commands)"))
            } else if self.multi_bytes + request_bytes > MULTI_BYTES_MAX {
                self.multi_dirty = true;
                Frame::error(format!("ERR MULTI queue is full ({MULTI_BYTES_MAX} bytes)"))
            } else {
                self.multi_bytes += request_bytes;
                queue.push(command);
                Frame::Simple("QUEUED".into())
            };
            slots.push(Slot::Ready(reply, proto));
            return Next::Continue;
        }
        let class = command.class();
        if class != Class::Read {
            // Anything else may change what a read sees (a write, a blocking pop, EXEC…).
            self.view = None;
        }
        match class {
            Class::Write if let Some(refusal) = engine.store.write_refusal() => {
                slots.push(Slot::Ready(Frame::Error(refusal), proto));
                Next::Continue
            }
            Class::Write
                if let Command::Data { spec, args } = &command
                    && let Some((keys, timeout_ms)) = cmd::lists::blocking_keys(spec.name, args) =>
            {
                self.block(engine, command, keys, timeout_ms, slots, io).await
            }
            Class::Write => {
                let program: TxnProgram<Frame> = Box::new(move |view| command.execute_once_in_txn(view));
                self.submit(Vec::new(), program, Mode::Single, slots);
                Next::Continue
            }
            Class::Read => {
                self.settle(engine, slots).await;
                let reply = self.read(engine, command);
                slots.push(Slot::Ready(reply, proto));
                Next::Continue
            }
            Class::Connection => {
                self.settle(engine, slots).await;
                self.connection_command(engine, command, slots).await
            }
        }
    }

    /// A blocking command (BLPOP and friends) outside MULTI: runs in queue order like any
    /// write; if it has nothing to serve, the writer keeps it and serves it right after a
    /// write to one of its keys. The connection waits for it — as Redis, a blocked client
    /// runs nothing else — until it is served, its timeout passes, the client leaves, or the
    /// server stops; the last three cancel it in the writer first, so an element is never
    /// popped for a client that is no longer waiting.
    async fn block(
        &mut self,
        engine: &Engine,
        command: Command,
        keys: Vec<Vec<u8>>,
        timeout_ms: u64,
        slots: &mut Vec<Slot>,
        io: &mut Io<'_>,
    ) -> Next {
        let proto = self.proto;
        let timeout_reply = if matches!(&command, Command::Data { spec, .. } if spec.name == "blmove" || spec.name == "brpoplpush")
        {
            Frame::Null
        } else {
            Frame::NullArray
        };
        let id = self.id;
        let (unblock_tx, mut unblock_rx) = oneshot::channel::<bool>();
        engine.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, unblock_tx);
        // The first run checks every key's type, as Redis does before blocking. Later runs
        // pop only from the keys that hold the type it pops (or are empty), as Redis serves
        // the key that became ready even when another key it waits on now holds a string;
        // a wrong destination type (BLMOVE) stays an error for the client.
        let mut first = true;
        let pops = if matches!(&command, Command::Data { spec, .. } if spec.name.starts_with("bz")) {
            crate::storage::node::Kind::ZSet
        } else {
            crate::storage::node::Kind::List
        };
        let waited = keys.clone();
        let program: BlockingProgram<Frame> = Box::new(move |view| {
            let mut run = None;
            if !std::mem::replace(&mut first, false) {
                let db = cmd::db::Db { kv: view, now_ms: cmd::now_ms(), counts: None };
                let mut servable = Vec::new();
                for k in &waited {
                    if db.head(k)?.is_none_or(|h| h.kind == pops) {
                        servable.push(k.clone());
                    }
                }
                if servable.is_empty() {
                    return Ok(None);
                }
                if servable.len() < waited.len()
                    && let Command::Data { spec, args } = &command
                    && let Some(args) = cmd::lists::with_blocking_keys(spec.name, args, &servable)
                {
                    run = Some(Command::Data { spec, args });
                }
            }
            // A null reply is nothing to serve yet: the waiter keeps waiting.
            let served = run.as_ref().unwrap_or(&command).execute_in_txn(view)?;
            Ok((!matches!(served, Frame::Null | Frame::NullArray)).then_some(served))
        });
        // Replies to what came before in the pipeline go out now, as Redis sends them before
        // the client blocks.
        self.settle(engine, slots).await;
        let mut out = Vec::new();
        for slot in slots.drain(..) {
            let (frame, proto, _) = resolve(slot).await;
            frame.encode(proto, &mut out);
        }
        if !out.is_empty() && io.stream.write_all(&out).await.is_err() {
            engine.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
            return Next::Close;
        }
        let (request, mut rx) = Writer::blocking_request(id, keys, program);
        self.outbox.push(request);
        self.flush(engine).await;
        let deadline = (timeout_ms > 0)
            .then(|| tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms));
        let mut peek = [0u8; 4096];
        let mut closed = false;
        let mut unblockable = true;
        // Why the client stops waiting, once it does. Cancelling only succeeds while the
        // transaction waits in the writer; while it is still queued (or being served) it is
        // retried every millisecond until it waits or its outcome arrives.
        let mut cancel: Option<Cancel> = None;
        let mut retry: Option<tokio::time::Instant> = None;
        let outcome = loop {
            if let Some(why) = cancel {
                if engine.writer.unblock(id) {
                    match why {
                        Cancel::Leave => {
                            engine
                                .blocked
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .remove(&id);
                            return Next::Close;
                        }
                        Cancel::Timeout | Cancel::Unblock(false) => break None,
                        Cancel::Unblock(true) => {
                            break Some(Ok(Err(TxnFailure::Aborted(
                                "UNBLOCKED client unblocked via CLIENT UNBLOCK".into(),
                            ))));
                        }
                    }
                }
                retry = Some(tokio::time::Instant::now() + std::time::Duration::from_millis(1));
            }
            tokio::select! {
                outcome = &mut rx => break Some(outcome),
                _ = sleep_until(deadline), if cancel.is_none() => cancel = Some(Cancel::Timeout),
                _ = sleep_until(retry), if cancel.is_some() => {}
                signal = &mut unblock_rx, if unblockable => {
                    unblockable = false;
                    if let Ok(error) = signal
                        && cancel != Some(Cancel::Leave)
                    {
                        cancel = Some(Cancel::Unblock(error));
                    }
                }
                _ = io.shutdown.recv(), if !closed => {
                    closed = true;
                    cancel = Some(Cancel::Leave);
                }
                read = io.stream.read(&mut peek), if !closed && io.extra.len() < RESP_REQUEST_BYTES_MAX => match read {
                    Ok(0) | Err(_) => {
                        closed = true;
                        cancel = Some(Cancel::Leave);
                    }
                    // The client's next requests, run once this one is answered.
                    Ok(n) => io.extra.extend_from_slice(peek.get(..n).unwrap_or_default()),
                },
            }
        };
        engine.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        let reply = match outcome {
            None => timeout_reply,
            Some(outcome) => {
                let outcome = outcome.unwrap_or_else(|_| {
                    Err(TxnFailure::Store {
                        code: "shutting_down",
                        message: "server is shutting down".into(),
                    })
                });
                if let Ok(Committed::Done { seqno: Some(seqno), .. }) = &outcome {
                    self.last_seqno = self.last_seqno.max(*seqno);
                }
                outcome_frame(outcome, Mode::Single)
            }
        };
        slots.push(Slot::Ready(reply, proto));
        if closed { Next::Close } else { Next::Continue }
    }

    /// Queues a write in the outbox; its reply slot waits for the writer.
    fn submit(
        &mut self,
        watch: Vec<(Vec<u8>, u64)>,
        program: TxnProgram<Frame>,
        mode: Mode,
        slots: &mut Vec<Slot>,
    ) {
        let (request, rx) = Writer::request(watch, program);
        self.view = None;
        self.outbox.push(request);
        slots.push(Slot::Pending(rx, mode, self.proto));
    }

    /// Hands the queued writes to the writer in one message. If the writer is gone, the
    /// requests are dropped and their slots answer that the server is shutting down.
    async fn flush(&mut self, engine: &Engine) {
        let _ = engine.writer.enqueue_all(std::mem::take(&mut self.outbox)).await;
    }

    /// Sends and waits for every queued write, so that what follows sees it.
    async fn settle(&mut self, engine: &Engine, slots: &mut [Slot]) {
        self.flush(engine).await;
        self.last_seqno = self.last_seqno.max(settle(slots).await);
    }

    fn read(&mut self, engine: &Engine, command: Command) -> Frame {
        // The counts are taken only for a command that reads them: they are behind a lock
        // every connection would share.
        let counts_keys = command.counts_keys();
        let view = match self.view.take().filter(|view| !counts_keys || view.counts.is_some()) {
            Some(view) => view,
            None => {
                // Counts first: a snapshot taken after them is at least as new (DBSIZE may
                // count a key committed in between as not yet there, never the other way).
                let counts = counts_keys.then(|| engine.store.key_counts());
                match engine.store.snapshot() {
                    Ok(snapshot) => ReadView { counts, snapshot, now_ms: cmd::now_ms() },
                    Err(e) => return Frame::error(format!("ERR {}", error_chain(&e))),
                }
            }
        };
        let reply = if let Command::Scan { cursor, pattern, count, target } = command {
            self.scan(&view.snapshot, view.now_ms, cursor, pattern.as_deref(), count, &target)
        } else {
            command.execute_read(&view.snapshot, view.counts, view.now_ms).unwrap_or_else(abort_frame)
        };
        self.view = Some(view);
        reply
    }

    fn scan(
        &mut self,
        snapshot: &crate::storage::Snapshot,
        now_ms: u64,
        cursor: u64,
        pattern: Option<&[u8]>,
        count: usize,
        target: &cmd::keys::ScanTarget,
    ) -> Frame {
        let after = if cursor == 0 {
            None
        } else {
            match self.cursors.iter().position(|(id, _)| *id == cursor) {
                Some(i) => self.cursors.remove(i).map(|(_, key)| key),
                None => return Frame::error("ERR invalid cursor"),
            }
        };
        let mut kv = cmd::db::ReadOnly(snapshot);
        let db = cmd::db::Db { kv: &mut kv, now_ms, counts: None };
        let (items, last) = match cmd::keys::scan_step(&db, target, after.as_deref(), pattern, count) {
            Ok(step) => step,
            Err(e) => return abort_frame(e),
        };
        let next = match last {
            Some(last) => {
                let id = self.next_cursor;
                self.next_cursor += 1;
                if self.cursors.len() == SCAN_CURSORS_MAX {
                    self.cursors.pop_front();
                }
                self.cursors.push_back((id, last));
                id
            }
            None => 0,
        };
        Frame::Array(vec![Frame::bulk(next.to_string()), Frame::Array(items)])
    }

    async fn connection_command(
        &mut self,
        engine: &Arc<Engine>,
        command: Command,
        slots: &mut Vec<Slot>,
    ) -> Next {
        let proto = self.proto;
        let reply = match command {
            Command::Ping(None) => Frame::Simple("PONG".into()),
            Command::Ping(Some(message)) | Command::Echo(message) => Frame::Bulk(message),
            Command::Quit => {
                slots.push(Slot::Ready(Frame::ok(), proto));
                return Next::Close;
            }
            Command::Auth { user, password } => self.auth(engine, user.as_deref(), &password),
            Command::Hello { proto: requested, auth, setname } => {
                if let Some((user, password)) = auth {
                    let reply = self.auth(engine, Some(&user), &password);
                    if matches!(reply, Frame::Error(_)) {
                        slots.push(Slot::Ready(reply, proto));
                        return Next::Continue;
                    }
                }
                if !self.authenticated {
                    Frame::error(
                        "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
                    )
                } else {
                    if let Some(p) = requested {
                        self.proto = p;
                    }
                    if let Some(name) = setname {
                        self.name = Some(name);
                    }
                    self.hello(engine)
                }
            }
            Command::Select(0) => Frame::ok(),
            Command::Select(_) => Frame::error("ERR DB index is out of range (Strand has one database, 0)"),
            Command::ClientSetName(name) => {
                self.name = (!name.is_empty()).then_some(name);
                Frame::ok()
            }
            Command::ClientGetName => Frame::from_option(self.name.clone()),
            Command::ClientId => Frame::Integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            Command::ClientSetInfo | Command::ClientNoEvict => Frame::ok(),
            Command::ClientInfo => Frame::bulk(self.client_line()),
            Command::ClientUnblock { id, error } => {
                let signal =
                    engine.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
                Frame::Integer(i64::from(signal.is_some_and(|tx| tx.send(error).is_ok())))
            }
            Command::ClientList => Frame::bulk(format!("{}\n", self.client_line())),
            Command::Reset => {
                self.multi = None;
                self.multi_dirty = false;
                self.watch.clear();
                self.name = None;
                self.proto = 2;
                self.authenticated = engine.config.password.is_none();
                Frame::Simple("RESET".into())
            }
            Command::Multi => {
                if self.multi.is_some() {
                    Frame::error("ERR MULTI calls can not be nested")
                } else {
                    self.multi = Some(Vec::new());
                    self.multi_dirty = false;
                    self.multi_bytes = 0;
                    Frame::ok()
                }
            }
            Command::Discard => match self.multi.take() {
                None => Frame::error("ERR DISCARD without MULTI"),
                Some(_) => {
                    self.watch.clear();
                    Frame::ok()
                }
            },
            Command::Exec => {
                let Some(queue) = self.multi.take() else {
                    slots.push(Slot::Ready(Frame::error("ERR EXEC without MULTI"), proto));
                    return Next::Continue;
                };
                let watch = std::mem::take(&mut self.watch);
                if std::mem::take(&mut self.multi_dirty) {
                    Frame::error("EXECABORT Transaction discarded because of previous errors.")
                } else {
                    // All or nothing (GT.M's TP semantics, docs/architecture.md): a command
                    // that fails inside EXEC rolls the whole transaction back.
                    let program: TxnProgram<Frame> = Box::new(move |view| {
                        let mut replies = Vec::with_capacity(queue.len());
                        for command in &queue {
                            replies.push(command.execute_in_txn(view)?);
                        }
                        Ok(Frame::Array(replies))
                    });
                    self.submit(watch, program, Mode::Exec, slots);
                    return Next::Continue;
                }
            }
            Command::Watch(keys) => {
                if self.multi.is_some() {
                    Frame::error("ERR WATCH inside MULTI is not allowed")
                } else if self.watch.len() + keys.len() > WATCH_KEYS_MAX {
                    Frame::error(format!("ERR too many watched keys (max {WATCH_KEYS_MAX})"))
                } else {
                    let version = engine.store.committed_version();
                    self.watch.extend(keys.into_iter().map(|k| (k, version)));
                    Frame::ok()
                }
            }
            Command::Unwatch => {
                self.watch.clear();
                Frame::ok()
            }
            Command::Info(sections) => server::info(engine, &sections),
            Command::Role => server::role(engine),
            Command::Wait { replicas, timeout_ms } => {
                wait(engine, self.last_seqno, replicas, timeout_ms).await
            }
            Command::CommandList => server::command_list(),
            Command::CommandCount => server::command_count(),
            Command::CommandInfo(names) => server::command_info(&names),
            Command::CommandDocs(names) => cmd::docs::reply(&names),
            Command::ConfigGet(patterns) => server::config_get(engine, &patterns),
            Command::ConfigSet(pairs) => server::config_set(&pairs),
            Command::ConfigResetStat => Frame::ok(),
            Command::FunctionEmpty(true) => Frame::ok(),
            Command::FunctionEmpty(false) => Frame::Array(Vec::new()),
            other => unreachable!("{other:?} is not a connection command"),
        };
        // `self.proto`, not `proto`: a HELLO answers in the protocol it just selected.
        slots.push(Slot::Ready(reply, self.proto));
        Next::Continue
    }

    /// This connection as CLIENT INFO / CLIENT LIST describe one (the fields clients read).
    fn client_line(&self) -> String {
        format!(
            "id={} name={} db=0 multi={} watch={} resp={} lib-name= lib-ver=",
            self.id,
            self.name.as_deref().map(String::from_utf8_lossy).unwrap_or_default(),
            self.multi.as_ref().map_or(-1, |q| i64::try_from(q.len()).unwrap_or(i64::MAX)),
            self.watch.len(),
            self.proto
        )
    }

    fn auth(&mut self, engine: &Engine, user: Option<&[u8]>, password: &[u8]) -> Frame {
        let Some(expected) = engine.config.password.as_deref() else {
            return Frame::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        };
        let user_ok = user.is_none_or(|u| u == b"default");
        if user_ok && constant_time_eq(expected, password) {
            self.authenticated = true;
            Frame::ok()
        } else {
            tracing::info!(client = self.id, "authentication failed");
            Frame::error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    fn hello(&self, engine: &Engine) -> Frame {
        let role = match engine.store.meta().role {
            crate::storage::meta::Role::Secondary => "replica",
            _ => "master",
        };
        Frame::Map(vec![
            (Frame::bulk("server"), Frame::bulk("strand")),
            (Frame::bulk("version"), Frame::bulk(server::REDIS_COMPAT_VERSION)),
            (Frame::bulk("strand_version"), Frame::bulk(crate::VERSION)),
            (Frame::bulk("proto"), Frame::Integer(i64::from(self.proto))),
            (Frame::bulk("id"), Frame::Integer(i64::try_from(self.id).unwrap_or(i64::MAX))),
            (Frame::bulk("mode"), Frame::bulk("standalone")),
            (Frame::bulk("role"), Frame::bulk(role)),
            (Frame::bulk("modules"), Frame::Array(Vec::new())),
        ])
    }
}
