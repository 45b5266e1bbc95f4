//! Command line: `strand-engine run …` starts a server; `strand-engine ctl …` talks to one
//! through the admin API (or, for offline operations, works on a data directory directly).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::admin::client::Target;
use crate::admin::{BackupRequest, CreateRequest, JournalEntry, Status};
use crate::base::error_chain;
use crate::engine::Config;
use crate::limits::{
    CHECKPOINT_OVERLAY_BYTES, CLIENTS_MAX_DEFAULT, DISK_RESERVE_BYTES_DEFAULT, READ_CACHE_BYTES_DEFAULT,
    SEGMENT_BYTES, TXN_IMAGE_BYTES_DEFAULT, TXN_IMAGE_BYTES_MIN,
};

/// `--checkpoint-bytes` and `--journal-segment-bytes`: at least 4 KiB (tests use small ones
/// to checkpoint and rotate all the time).
fn parse_wal_bytes(text: &str) -> Result<u64, String> {
    let n: u64 = text.parse().map_err(|e| format!("not a byte count: {e}"))?;
    if n < 4096 {
        return Err("at least 4096".into());
    }
    Ok(n)
}

/// `--max-txn-image-bytes`: at least [`TXN_IMAGE_BYTES_MIN`], so that any one key can still
/// be written, overwritten and deleted.
fn parse_txn_image_bytes(text: &str) -> Result<usize, String> {
    let n: usize = text.parse().map_err(|e| format!("not a byte count: {e}"))?;
    if n < TXN_IMAGE_BYTES_MIN {
        return Err(format!(
            "at least {TXN_IMAGE_BYTES_MIN} (32 MiB), so that any one key can still be written"
        ));
    }
    Ok(n)
}
use crate::storage::backup;

#[derive(Debug, Parser)]
#[command(name = "strand-engine", version = crate::VERSION, about = "Strand: a replicated, journaled key-value engine speaking RESP")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Top,
}

#[derive(Debug, Subcommand)]
pub enum Top {
    /// Run a server for the instance in --data-dir.
    Run(RunArgs),
    /// Administer an instance: through its admin API, or offline for restore.
    Ctl(CtlArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory holding the instance's database and admin socket.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Instance name; creates the instance on first start, must match afterwards.
    #[arg(long)]
    pub name: Option<String>,
    /// Create the instance as a supplementary instance (first start only).
    #[arg(long)]
    pub supplementary: bool,
    /// Address of the RESP data port.
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub resp_addr: SocketAddr,
    /// Address of the TCP admin API (the Unix socket in --data-dir is always served).
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
    /// File holding the bearer token required on --admin-addr.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the password clients must give with AUTH.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Most concurrent client connections.
    #[arg(long, default_value_t = CLIENTS_MAX_DEFAULT)]
    pub max_clients: usize,
    /// Commits are refused while the data volume has less free space than this.
    #[arg(long, default_value_t = DISK_RESERVE_BYTES_DEFAULT)]
    pub disk_reserve_bytes: u64,
    /// Most bytes of before- and after-images one transaction may journal; a command past it
    /// is refused with nothing changed (a transaction holds about three times this in
    /// memory while it runs).
    #[arg(long, default_value_t = TXN_IMAGE_BYTES_DEFAULT, value_parser = parse_txn_image_bytes)]
    pub max_txn_image_bytes: usize,
    /// Memory that transactions committed since the last checkpoint may hold (they are in
    /// the journal, and in memory until the background checkpoint writes them into the
    /// database file); past it they are checkpointed, and past twice it writes wait.
    #[arg(long, default_value_t = CHECKPOINT_OVERLAY_BYTES as u64, value_parser = parse_wal_bytes)]
    pub checkpoint_bytes: u64,
    /// Memory for nodes recently read from the database file, so that the next point read of
    /// them skips its B-tree (each checkpoint empties it); 0 turns the cache off.
    #[arg(long, default_value_t = READ_CACHE_BYTES_DEFAULT)]
    pub read_cache_bytes: usize,
    /// Size at which a journal segment file is closed and the next one begun.
    #[arg(long, default_value_t = SEGMENT_BYTES, value_parser = parse_wal_bytes)]
    pub journal_segment_bytes: u64,
    /// Bytes of the newest journal records kept even once every receiver has acknowledged
    /// them (so a new member can still join by streaming); older acknowledged records are
    /// trimmed after each checkpoint.
    #[arg(long, default_value_t = crate::storage::retention::KEEP_BYTES_DEFAULT)]
    pub journal_keep_bytes: u64,
    /// Most bytes the journal may hold for receivers that have not acknowledged it: past it
    /// the oldest records are trimmed anyway, and a receiver that still needs them must be
    /// re-seeded. 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub journal_retain_bytes: u64,
    /// Records older than this many seconds are trimmed even if a receiver still needs them
    /// (it must then be re-seeded). 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub journal_retain_seconds: u64,
    /// Most bytes per second this instance sends when it seeds a receiver from a snapshot
    /// (so seeding a new member does not starve the primary's disk or network). 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub seed_rate_bytes: u64,
    /// Least milliseconds between two applies of this instance's receiver while it keeps up
    /// with its source: what arrives meanwhile is applied and made durable with one
    /// `fdatasync`, so a standby syncs at most this often instead of once per commit group
    /// of its primary (whose disk it usually shares). Its acknowledgements — and a WAIT for
    /// them — come up to about twice this much later (a source with two frames unacknowledged
    /// holds the next commit until the ack). 0: apply every frame as it arrives. A receiver
    /// catching up (full frames) never waits. At most 1000.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub apply_interval_ms: u64,
    /// Log filter (tracing syntax), overridden by RUST_LOG.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Address where this instance receives replication streams.
    #[arg(long)]
    pub repl_addr: Option<SocketAddr>,
    /// File holding the replication secret both ends of a stream must know.
    #[arg(long)]
    pub repl_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Data directory of the instance (its admin socket is used).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// TCP admin address instead of the socket.
    #[arg(long, global = true)]
    pub admin_addr: Option<String>,
    /// File holding the bearer token for --admin-addr.
    #[arg(long, global = true)]
    pub admin_token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Identity, role, seqnos, versions.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Confirm the instance's identity (the server creates it at first start).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        supplementary: bool,
    },
    /// Print journal records as JSON lines.
    Journal {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Write a consistent backup to an absolute path on the server's machine.
    Backup {
        #[arg(long)]
        to: PathBuf,
    },
    /// Describe a backup file (offline).
    BackupInfo { file: PathBuf },
    /// Create a new instance in --data-dir from a backup, with a new identity (offline).
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        supplementary: bool,
    },
    /// Check the whole journal against the data.
    Verify,
    /// Liveness.
    Health,
    /// Readiness.
    Ready,
    /// Become the originating primary (accept updates; new history record).
    Promote {
        /// The family term this promotion begins (default: one above the instance's).
        #[arg(long)]
        term: Option<u64>,
        /// Take writes only while a role lease granted with `ctl lease` runs.
        #[arg(long)]
        lease: bool,
    },
    /// Become a replicating secondary (read-only), writing nothing (a crashed primary rejoining).
    Demote {
        /// The family's current term (adopted if higher).
        #[arg(long)]
        term: Option<u64>,
    },
    /// Planned handover: stop commits, write a failover record the standby will see, turn read-only.
    FailoverToStandby {
        /// The family's current term (adopted if higher).
        #[arg(long)]
        term: Option<u64>,
    },
    /// Hot-standby upgrade, steps 1–2 (on the older primary): create what the next format needs, as a journaled write.
    PrepareUpgrade,
    /// Hot-standby upgrade, step 6 (on the new primary): move the data to this binary's format
    /// (an Upgrade record its secondaries replay).
    UpgradeFormat,
    /// Grant or renew the primary's role lease for TERM (what the operator does every few seconds).
    Lease {
        #[arg(long)]
        term: u64,
        /// How long writes are accepted from now.
        #[arg(long, default_value_t = 15_000)]
        duration_ms: u64,
    },
    /// The receiver side of replication.
    Receiver {
        #[command(subcommand)]
        action: ReceiverAction,
    },
    /// Outgoing replication streams.
    Source {
        #[command(subcommand)]
        action: SourceAction,
    },
    /// Per-receiver backlog and lag.
    Backlog {
        #[arg(long)]
        json: bool,
    },
    /// Roll back to a seqno, or to the common point with the instance at HOST:PORT.
    Rollback {
        #[arg(long, conflicts_with = "fetchresync", required_unless_present = "fetchresync")]
        to_seqno: Option<u64>,
        /// Replication address of the instance to resynchronise with.
        #[arg(long)]
        fetchresync: Option<String>,
        /// Work on the data directory directly, with no server running (e.g. a crashed
        /// primary that must not accept writes before it has rolled back).
        #[arg(long, requires = "to_seqno")]
        offline: bool,
    },
    /// Read unreplicated-transaction logs (offline).
    LostTransactions {
        #[command(subcommand)]
        action: LostAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReceiverAction {
    /// Accept a stream on --repl-addr: BC (makes the instance a replicating secondary) or,
    /// with --si, one SI stream into a supplementary instance (a supplementary primary).
    Start {
        /// Roll back automatically when this instance is ahead of its source.
        #[arg(long)]
        autorollback: bool,
        /// Receive an SI stream (supplementary instances only).
        #[arg(long)]
        si: bool,
        /// SI only: when ahead of the source, resume from the common point without rolling back.
        #[arg(long)]
        noresync: bool,
        /// BC: when the source's journal no longer reaches back to what this instance needs,
        /// replace its data with a snapshot of the source's (instead of refusing). SI: a source
        /// family's first stream into an instance that holds nothing of its own begins from the
        /// source's snapshot (in place of --updateresync).
        #[arg(long, conflicts_with_all = ["updateresync", "updateresync_from"])]
        seed: bool,
        /// SI only, first start for a source family: a backup of a member of that family whose
        /// data this instance holds (seeds the stream's history and position).
        #[arg(long, value_name = "BACKUP")]
        updateresync: Option<PathBuf>,
        /// With --updateresync when all 15 SI streams are in use: the family (root instance
        /// name) whose stream number to reuse.
        #[arg(long, value_name = "FAMILY")]
        reuse: Option<String>,
        /// SI only, first start for a family, in place of --updateresync: the replication
        /// address of a family member that holds no transactions yet.
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "updateresync")]
        updateresync_from: Option<String>,
        /// BC: the family's current term (adopted if higher; a source below it is refused).
        #[arg(long)]
        term: Option<u64>,
    },
    /// Stop receiving.
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum SourceAction {
    /// Stream this instance's journal to a receiver.
    Start {
        /// Instance name of the receiver (it must answer as such).
        #[arg(long)]
        receiver: String,
        /// The receiver's --repl-addr.
        #[arg(long)]
        addr: String,
        /// An SI stream (the receiver is a supplementary instance) instead of BC.
        #[arg(long)]
        si: bool,
    },
    /// Stop streaming to a receiver.
    Stop {
        #[arg(long)]
        receiver: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LostAction {
    /// Print a log's transactions.
    Show {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Entry point shared by `main`; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match cli.command {
        Top::Run(args) => runtime.block_on(run(args)),
        Top::Ctl(args) => runtime.block_on(ctl(args)),
    }
}

fn read_secret(path: &PathBuf, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        return Err(format!("{what} file {} is empty", path.display()));
    }
    Ok(secret)
}

async fn run(args: RunArgs) -> i32 {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a pod's log, or a file, gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let admin_token = match args.admin_token_file.as_ref().map(|p| read_secret(p, "admin token")).transpose()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let password = match args.password_file.as_ref().map(|p| read_secret(p, "password")).transpose() {
        Ok(p) => p.map(String::into_bytes),
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let repl_secret =
        match args.repl_secret_file.as_ref().map(|p| read_secret(p, "replication secret")).transpose() {
            Ok(s) => s.map(String::into_bytes),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
    if args.max_clients == 0 {
        eprintln!("error: --max-clients must be at least 1");
        return 2;
    }
    let config = Config {
        data_dir: args.data_dir,
        name: args.name,
        supplementary: args.supplementary,
        resp_addr: args.resp_addr,
        admin_addr: args.admin_addr,
        admin_token,
        password,
        max_clients: args.max_clients,
        disk_reserve_bytes: args.disk_reserve_bytes,
        max_txn_image_bytes: args.max_txn_image_bytes,
        checkpoint_bytes: usize::try_from(args.checkpoint_bytes).unwrap_or(usize::MAX),
        read_cache_bytes: args.read_cache_bytes,
        segment_bytes: args.journal_segment_bytes,
        retention: crate::storage::retention::Retention {
            keep_bytes: args.journal_keep_bytes,
            retain_bytes: (args.journal_retain_bytes > 0).then_some(args.journal_retain_bytes),
            retain_age: (args.journal_retain_seconds > 0)
                .then(|| std::time::Duration::from_secs(args.journal_retain_seconds)),
        },
        seed_rate_bytes: (args.seed_rate_bytes > 0).then_some(args.seed_rate_bytes),
        apply_interval: std::time::Duration::from_millis(args.apply_interval_ms),
        resp_port: 0,
        repl_addr: args.repl_addr,
        repl_secret,
    };
    match crate::server::run(config).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "server failed");
            eprintln!("error: {}", error_chain(&e));
            1
        }
    }
}

async fn ctl(args: CtlArgs) -> i32 {
    match ctl_inner(args).await {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}

/// Rolls back a stopped instance by opening its database directly.
async fn offline_rollback(dir: &std::path::Path, to: u64) -> Result<serde_json::Value, String> {
    use std::sync::Arc;
    let store = crate::storage::Store::open(dir, None).map_err(|e| {
        let text = error_chain(&e);
        if text.contains("already open") || text.contains("lock") {
            format!(
                "{text}; is a server running on {}? Stop it, or roll back online without --offline",
                dir.display()
            )
        } else {
            text
        }
    })?;
    let store = Arc::new(store);
    let metrics = Arc::new(crate::metrics::Metrics::new().map_err(|e| e.to_string())?);
    let (writer, thread) = crate::storage::writer::Writer::<()>::spawn(
        store.clone(),
        crate::storage::writer::WriterLimits { disk_reserve_bytes: 0, ..Default::default() },
        metrics,
    )
    .map_err(|e| e.to_string())?;
    let new_epoch = matches!(
        store.role(),
        crate::storage::meta::Role::Primary | crate::storage::meta::Role::SupplementaryPrimary
    );
    let done = writer
        .rollback(to, new_epoch, format!("offline rollback to seqno {to} requested by an operator"))
        .await
        .map_err(|e| e.to_string())?;
    drop(writer);
    let _ = thread.join();
    Ok(serde_json::json!({ "journal_seqno": store.committed_seqno(), "rollback": done }))
}

fn target(args: &CtlArgs) -> Result<Target, String> {
    if let Some(addr) = &args.admin_addr {
        let token = args.admin_token_file.as_ref().map(|p| read_secret(p, "admin token")).transpose()?;
        return Ok(Target::Tcp { addr: addr.clone(), token });
    }
    let dir = args.data_dir.as_ref().ok_or("give --data-dir (admin socket) or --admin-addr")?;
    Ok(Target::Unix(crate::admin::socket_path(dir)))
}

/// Writes one line of `ctl`'s output. A reader that went away (`ctl status | head -1`) ends
/// the command quietly with the shell's code for a broken pipe, as any Unix tool does — the
/// process ignores SIGPIPE, and `println!` would panic there.
fn out(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) =
        stdout.write_fmt(line).and_then(|()| stdout.write_all(b"\n")).and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

macro_rules! outln {
    ($($arg:tt)*) => { out(format_args!($($arg)*)) };
}

fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    outln!("{text}");
    Ok(())
}

async fn ctl_inner(args: CtlArgs) -> Result<(), String> {
    let e = |err: crate::admin::client::ClientError| error_chain(&err);
    match &args.command {
        CtlCommand::Restore { from, name, supplementary } => {
            let dir = args.data_dir.as_ref().ok_or("restore needs --data-dir for the new instance")?;
            let meta = backup::restore(from, dir, name, *supplementary).map_err(|err| error_chain(&err))?;
            return print_json(&meta);
        }
        CtlCommand::BackupInfo { file } => {
            return print_json(&backup::describe(file).map_err(|err| error_chain(&err))?);
        }
        CtlCommand::Rollback { to_seqno: Some(to), offline: true, .. } => {
            let dir = args.data_dir.as_ref().ok_or("an offline rollback needs --data-dir")?;
            return print_json(&offline_rollback(dir, *to).await?);
        }
        CtlCommand::LostTransactions { action: LostAction::Show { file, json } } => {
            let (header, txns) = crate::storage::lostlog::read(file).map_err(|err| error_chain(&err))?;
            if *json {
                return print_json(&serde_json::json!({"header": header, "transactions": txns}));
            }
            outln!(
                "{}: {} transactions rolled off {} (seqnos {}..={}): {}",
                file.display(),
                header.transactions,
                header.instance,
                header.from_seqno,
                header.to_seqno,
                header.reason
            );
            for t in txns {
                let changes: Vec<String> = t
                    .changes
                    .iter()
                    .map(|c| {
                        let mut key = c.key.clone().unwrap_or_else(|| format!("0x{}", c.key_hex));
                        if let Some(element) =
                            c.element.clone().or_else(|| c.element_hex.as_ref().map(|h| format!("0x{h}")))
                        {
                            key = format!("{key}[{element}]");
                        }
                        if !c.node.is_empty() && c.node != "string" {
                            key = format!("{key}({})", c.node);
                        }
                        match (&c.after, &c.after_hex) {
                            (Some(a), _) => format!("{key}={a}"),
                            (None, Some(h)) => format!("{key}=0x{h}"),
                            (None, None) => format!("{key} deleted"),
                        }
                    })
                    .collect();
                outln!(
                    "seqno {} stream {} stream_seqno {} origin {} at {}: {}",
                    t.seqno,
                    t.stream,
                    t.stream_seqno,
                    t.origin.as_deref().unwrap_or("?"),
                    t.commit_time_micros,
                    changes.join(" ")
                );
            }
            return Ok(());
        }
        _ => {}
    }
    let target = target(&args)?;
    match args.command {
        CtlCommand::Status { json } => {
            let status: Status = target.call_json("GET", "/v1/status", None).await.map_err(e)?;
            if json {
                print_json(&status)?;
            } else {
                outln!("name:           {}", status.name);
                outln!("creation id:    {}", status.creation_id);
                outln!("role:           {}", status.role);
                outln!("supplementary:  {}", status.supplementary);
                outln!("journal seqno:  {}", status.journal_seqno);
                outln!(
                    "journal:        seqnos {}..={}, {} bytes",
                    status.journal.first_seqno,
                    status.journal_seqno,
                    status.journal.bytes
                );
                for s in &status.streams {
                    outln!(
                        "stream {:>2}:      seqno {} from {}",
                        s.stream,
                        s.seqno,
                        s.source_family.as_deref().unwrap_or("?")
                    );
                    for h in &s.history {
                        outln!(
                            "                 history: from {} generated by {} ({})",
                            h.start_seqno,
                            h.root_name,
                            h.root_creation_id
                        );
                    }
                }
                outln!("nodes:          {}", status.nodes);
                outln!("format/binary:  {} / {}", status.format_version, status.binary_version);
                outln!("uptime:         {}s", status.uptime_seconds);
            }
        }
        CtlCommand::Create { name, supplementary } => {
            let body =
                serde_json::to_value(CreateRequest { name, supplementary }).map_err(|err| err.to_string())?;
            let status: Status = target.call_json("POST", "/v1/instance", Some(body)).await.map_err(e)?;
            print_json(&status)?;
        }
        CtlCommand::Journal { from, to } => {
            let path = match to {
                Some(to) => format!("/v1/journal?from={from}&to={to}"),
                None => format!("/v1/journal?from={from}"),
            };
            let entries: Vec<JournalEntry> = target.call_json("GET", &path, None).await.map_err(e)?;
            for entry in entries {
                outln!("{}", serde_json::to_string(&entry).map_err(|err| err.to_string())?);
            }
        }
        CtlCommand::Backup { to } => {
            let to = if to.is_absolute() {
                to
            } else {
                std::env::current_dir().map_err(|err| err.to_string())?.join(to)
            };
            let body = serde_json::to_value(BackupRequest { path: to }).map_err(|err| err.to_string())?;
            let info: backup::BackupInfo =
                target.call_json("POST", "/v1/backup", Some(body)).await.map_err(e)?;
            print_json(&info)?;
        }
        CtlCommand::Verify => {
            let report: serde_json::Value = target.call_json("GET", "/v1/verify", None).await.map_err(e)?;
            print_json(&report)?;
        }
        CtlCommand::Health => {
            let v: serde_json::Value = target.call_json("GET", "/healthz", None).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Ready => {
            let v: serde_json::Value = target.call_json("GET", "/readyz", None).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Promote { term, lease } => {
            let body = serde_json::json!({ "term": term, "lease": lease });
            let v: serde_json::Value =
                target.call_json("POST", "/v1/promote", Some(body)).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Demote { term } => {
            let body = serde_json::json!({ "term": term });
            let v: serde_json::Value = target.call_json("POST", "/v1/demote", Some(body)).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::FailoverToStandby { term } => {
            let body = serde_json::json!({ "term": term });
            let v: serde_json::Value =
                target.call_json("POST", "/v1/failover", Some(body)).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::PrepareUpgrade => {
            let v: serde_json::Value =
                target.call_json("POST", "/v1/prepare-upgrade", None).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::UpgradeFormat => {
            let v: serde_json::Value =
                target.call_json("POST", "/v1/upgrade-format", None).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Lease { term, duration_ms } => {
            let body = serde_json::json!({ "term": term, "duration_ms": duration_ms });
            let v: serde_json::Value = target.call_json("POST", "/v1/lease", Some(body)).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Receiver {
            action:
                ReceiverAction::Start {
                    autorollback,
                    si,
                    noresync,
                    seed,
                    updateresync,
                    reuse,
                    updateresync_from,
                    term,
                },
        } => {
            let updateresync = match updateresync {
                Some(p) if p.is_relative() => {
                    Some(std::env::current_dir().map_err(|err| err.to_string())?.join(p))
                }
                other => other,
            };
            let body = serde_json::json!({
                "autorollback": autorollback,
                "si": si,
                "noresync": noresync,
                "seed": seed,
                "updateresync": updateresync,
                "reuse": reuse,
                "updateresync_from": updateresync_from,
                "term": term,
            });
            let v: serde_json::Value =
                target.call_json("POST", "/v1/receiver/start", Some(body)).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Receiver { action: ReceiverAction::Stop } => {
            let v: serde_json::Value =
                target.call_json("POST", "/v1/receiver/stop", None).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Source { action: SourceAction::Start { receiver, addr, si } } => {
            let body = serde_json::json!({ "receiver": receiver, "addr": addr, "si": si });
            let v: serde_json::Value =
                target.call_json("POST", "/v1/sources", Some(body)).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Source { action: SourceAction::Stop { receiver } } => {
            let v: serde_json::Value =
                target.call_json("DELETE", &format!("/v1/sources/{receiver}"), None).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Backlog { json } => {
            let v: Vec<crate::replication::source::SourceStatus> =
                target.call_json("GET", "/v1/backlog", None).await.map_err(e)?;
            if json {
                print_json(&v)?;
            } else {
                for s in v {
                    outln!(
                        "{:<20} {:<22} {:<18} sent {:>10} acked {:>10} backlog {:>8} lag {:.3}s",
                        s.receiver,
                        s.addr,
                        s.state,
                        s.sent_seqno,
                        s.acked_seqno,
                        s.backlog,
                        s.lag_seconds
                    );
                }
            }
        }
        CtlCommand::Rollback { to_seqno, fetchresync, .. } => {
            let body = serde_json::json!({ "to_seqno": to_seqno, "fetchresync": fetchresync });
            let v: serde_json::Value =
                target.call_json("POST", "/v1/rollback", Some(body)).await.map_err(e)?;
            print_json(&v)?;
        }
        CtlCommand::Restore { .. } | CtlCommand::BackupInfo { .. } | CtlCommand::LostTransactions { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(())
}
