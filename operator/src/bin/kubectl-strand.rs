//! `kubectl strand`: the family view and the family's procedures from a terminal. Installed
//! as a kubectl plugin (an executable named `kubectl-strand` on the PATH). It talks to the
//! Kubernetes API only: requests are annotations the operator acts on (docs/lifecycle.md),
//! status comes from the Family, Instance and ReplicationLink resources, and unreplicated-
//! transaction logs are read from the engine through the API server's pod proxy.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use strand_operator::controller::{ANNOTATION_FAILOVER, ANNOTATION_ROLLBACK, ANNOTATION_SWITCHOVER};
use strand_operator::crd::{Family, Instance, Mode, ReplicationLink};
use strand_operator::desired::{ADMIN_TOKEN_KEY, PORT_ADMIN, admin_secret_name};

#[derive(Parser)]
#[command(
    name = "kubectl strand",
    version,
    about = "Strand families: status, switchover, failover, rollback"
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every family (or one) as a tree: roles, terms, seqnos per stream, backlog, lag, last rollback.
    Status {
        family: Option<String>,
        /// `json` for scripts.
        #[arg(short, long, default_value = "text")]
        output: String,
    },
    /// Planned switchover: fence the primary, wait until INSTANCE has everything, promote it.
    Switchover {
        family: String,
        #[arg(long)]
        to: String,
        /// Return once requested, without waiting for the outcome.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_seconds: u64,
    },
    /// Forced failover: promote INSTANCE (default: the most advanced secondary) now, without the
    /// damping delay or a catch-up wait. What the old primary had and the new one lacks goes to
    /// its unreplicated-transaction log when it rejoins.
    Failover {
        family: String,
        #[arg(long)]
        to: Option<String>,
        /// Required: a forced failover can lose acknowledged writes to a log.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_seconds: u64,
    },
    /// Roll INSTANCE back to its common point with its source (fetchresync), when it is ahead
    /// and its link has no autorollback.
    Rollback {
        instance: String,
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Print an instance's unreplicated-transaction logs (the latest, or --file).
    LostTransactions {
        instance: String,
        #[arg(long)]
        file: Option<String>,
        #[arg(short, long, default_value = "text")]
        output: String,
    },
    /// Stop a link's stream (the receiving end keeps its data and its place in the family).
    Pause { link: String },
    /// Restart a paused link's stream.
    Resume { link: String },
}

type Failure = String;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    strand_operator::error_chain(e)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot reach the cluster ({}); check KUBECONFIG and the current context", chain(&e))
    })?;
    let ns = cli.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let k = Kube::new(client, &ns);
    match cli.command {
        Command::Status { family, output } => status(&k, family.as_deref(), &output).await,
        Command::Switchover { family, to, no_wait, timeout_seconds } => {
            let fam = k.family(&family).await?;
            member_of(&fam, &to)?;
            if fam.status.as_ref().and_then(|s| s.primary.as_deref()) == Some(to.as_str()) {
                println!("{to} already is the primary of family {family}");
                return Ok(());
            }
            let id = request_id();
            k.annotate(&to, ANNOTATION_SWITCHOVER, &id).await?;
            println!("switchover of family {family} to {to} requested ({ANNOTATION_SWITCHOVER}={id})");
            if no_wait {
                return Ok(());
            }
            follow(&k, &family, &to, "switchover", &id, timeout_seconds).await
        }
        Command::Failover { family, to, force, no_wait, timeout_seconds } => {
            if !force {
                return Err(format!(
                    "a forced failover can lose writes the primary acknowledged but did not replicate (they go to its unreplicated-transaction log); \
                     if the primary is healthy use `kubectl strand switchover {family} --to INSTANCE`; otherwise repeat with --force"
                ));
            }
            let fam = k.family(&family).await?;
            let primary = fam.status.as_ref().and_then(|s| s.primary.clone());
            let to = match to {
                Some(t) => {
                    member_of(&fam, &t)?;
                    t
                }
                None => k.most_advanced(&fam, primary.as_deref()).await?,
            };
            let id = request_id();
            k.annotate(&to, ANNOTATION_FAILOVER, &id).await?;
            println!("forced failover of family {family} to {to} requested ({ANNOTATION_FAILOVER}={id})");
            if no_wait {
                return Ok(());
            }
            follow(&k, &family, &to, "failover", &id, timeout_seconds).await
        }
        Command::Rollback { instance, timeout_seconds } => {
            let inst = k.instance(&instance).await?;
            let family = inst.status.as_ref().and_then(|s| s.family.clone()).ok_or_else(|| {
                format!("{instance} has no family in its status yet; is the operator running?")
            })?;
            let id = request_id();
            k.annotate(&instance, ANNOTATION_ROLLBACK, &id).await?;
            println!(
                "rollback of {instance} requested ({ANNOTATION_ROLLBACK}={id}); waiting for the operator"
            );
            let deadline = Instant::now() + Duration::from_secs(timeout_seconds);
            loop {
                let fam = k.family(&family).await?;
                if let Some(h) = handled(&fam, &instance, "rollback", &id) {
                    let inst = k.instance(&instance).await?;
                    println!("{}", h.outcome);
                    if let Some(r) = inst.status.and_then(|s| s.last_rollback) {
                        println!(
                            "last rollback: seqnos {}..={} ({} transactions) in {}\n  `kubectl strand lost-transactions {instance}` prints them",
                            r.from_seqno, r.to_seqno, r.transactions, r.log_path
                        );
                    }
                    return if h.outcome.starts_with("rolled back") {
                        Ok(())
                    } else {
                        Err(h.outcome.clone())
                    };
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "the operator has not acted within {timeout_seconds}s; see `kubectl describe instance {instance}` and the operator's log"
                    ));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Command::LostTransactions { instance, file, output } => {
            lost_transactions(&k, &instance, file, &output).await
        }
        Command::Pause { link } => pause(&k, &link, true).await,
        Command::Resume { link } => pause(&k, &link, false).await,
    }
}

fn request_id() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn member_of(fam: &Family, instance: &str) -> Result<(), Failure> {
    let members = fam.status.as_ref().map(|s| s.members.clone()).unwrap_or_default();
    if members.iter().any(|m| m == instance) {
        Ok(())
    } else {
        Err(format!(
            "{instance} is not a member of family {} (members: {}); `kubectl strand status` shows the families",
            fam.name_any(),
            members.join(", ")
        ))
    }
}

fn handled<'a>(
    fam: &'a Family,
    instance: &str,
    kind: &str,
    id: &str,
) -> Option<&'a strand_operator::crd::family::HandledRequest> {
    fam.status.as_ref()?.handled.iter().find(|h| h.instance == instance && h.kind == kind && h.id == id)
}

struct Kube {
    client: Client,
    ns: String,
}

impl Kube {
    fn new(client: Client, ns: &str) -> Self {
        Kube { client, ns: ns.to_owned() }
    }

    fn families(&self) -> Api<Family> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn instances(&self) -> Api<Instance> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn links(&self) -> Api<ReplicationLink> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn family(&self, name: &str) -> Result<Family, Failure> {
        self.families().get_opt(name).await.map_err(|e| chain(&e))?.ok_or_else(|| {
            format!("no family {name} in namespace {}; `kubectl strand status` lists them", self.ns)
        })
    }

    async fn instance(&self, name: &str) -> Result<Instance, Failure> {
        self.instances()
            .get_opt(name)
            .await
            .map_err(|e| chain(&e))?
            .ok_or_else(|| format!("no Instance {name} in namespace {}", self.ns))
    }

    async fn annotate(&self, instance: &str, key: &str, value: &str) -> Result<(), Failure> {
        let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
        self.instances()
            .patch(instance, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("cannot annotate {instance}: {}", chain(&e)))?;
        Ok(())
    }

    /// The member with the highest seqno that answers, other than `except`.
    async fn most_advanced(&self, fam: &Family, except: Option<&str>) -> Result<String, Failure> {
        let members = fam.status.as_ref().map(|s| s.members.clone()).unwrap_or_default();
        let mut best: Option<(u64, String)> = None;
        for m in members.iter().filter(|m| Some(m.as_str()) != except) {
            let inst = self.instance(m).await?;
            let s = inst.status.unwrap_or_default();
            if s.phase.as_deref() != Some("Running") {
                continue;
            }
            let seqno = s.journal_seqno.unwrap_or(0);
            if best.as_ref().is_none_or(|(b, _)| seqno > *b) {
                best = Some((seqno, m.clone()));
            }
        }
        best.map(|(_, m)| m).ok_or_else(|| {
            format!(
                "no member of family {} other than the primary answers; give one with --to",
                fam.name_any()
            )
        })
    }
}

/// Follows a switchover or failover until it ends, printing each step.
async fn follow(k: &Kube, family: &str, to: &str, kind: &str, id: &str, timeout: u64) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut seen_steps = 0usize;
    let mut started = false;
    loop {
        let fam = k.family(family).await?;
        let status = fam.status.clone().unwrap_or_default();
        if let Some(h) = handled(&fam, to, kind, id)
            && h.outcome != "started"
        {
            return Err(format!("refused: {}", h.outcome));
        }
        if let Some(p) = &status.procedure {
            started = true;
            for s in p.steps.iter().skip(seen_steps) {
                println!("  {}  {}", s.at, s.step);
            }
            seen_steps = p.steps.len();
        } else if (started || handled(&fam, to, kind, id).is_some())
            && let Some(r) = status.history.last().filter(|r| r.to.as_deref() == Some(to))
        {
            for s in r.steps.iter().skip(seen_steps) {
                println!("  {}  {}", s.at, s.step);
            }
            let message = r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            println!("{} of family {family} to {to}: {} at term {}{message}", r.kind, r.outcome, r.term);
            if r.outcome == "Succeeded" {
                return Ok(());
            }
            return Err(format!(
                "{} {}; {} is still the primary — see `kubectl describe family {family}`",
                r.kind,
                r.outcome.to_lowercase(),
                status.primary.unwrap_or_default()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not finished within {timeout}s (phase {}: {}); it goes on — `kubectl strand status {family}` follows it",
                status.phase.unwrap_or_default(),
                status.message.unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn pause(k: &Kube, link: &str, paused: bool) -> Result<(), Failure> {
    let patch = serde_json::json!({ "spec": { "paused": paused } });
    k.links().patch(link, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| {
        format!("cannot {} link {link}: {}", if paused { "pause" } else { "resume" }, chain(&e))
    })?;
    println!("link {link} {}", if paused { "paused: its stream stops" } else { "resumed" });
    Ok(())
}

/// A GET on the engine admin API of `instance` through the API server's pod proxy, with its
/// admin token (the proxy keeps the Authorization header for itself).
async fn engine_get(k: &Kube, instance: &str, path: &str) -> Result<String, Failure> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(k.client.clone(), &k.ns);
    let secret = secrets
        .get_opt(&admin_secret_name(instance))
        .await
        .map_err(|e| format!("cannot read the admin token of {instance}: {}", chain(&e)))?
        .ok_or_else(|| {
            format!("no Secret {} (is {instance} a Strand Instance?)", admin_secret_name(instance))
        })?;
    let token = secret
        .data
        .and_then(|d| d.get(ADMIN_TOKEN_KEY).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .ok_or_else(|| format!("Secret {} has no {ADMIN_TOKEN_KEY}", admin_secret_name(instance)))?;
    let uri = format!("/api/v1/namespaces/{}/pods/{instance}-0:{PORT_ADMIN}/proxy{path}", k.ns);
    let request = http::Request::get(uri)
        .header(strand_operator::engine_client::TOKEN_HEADER, token)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    k.client.request_text(request).await.map_err(|e| {
        format!("{instance}'s engine did not answer {path} through the API server: {}", chain(&e))
    })
}

async fn lost_transactions(
    k: &Kube,
    instance: &str,
    file: Option<String>,
    output: &str,
) -> Result<(), Failure> {
    let file = match file {
        Some(f) => f,
        None => {
            let list: Vec<serde_json::Value> =
                serde_json::from_str(&engine_get(k, instance, "/v1/lost-transactions").await?)
                    .map_err(|e| format!("unexpected answer: {e}"))?;
            let latest = list.last().and_then(|e| e["file"].as_str()).map(str::to_owned);
            match latest {
                Some(f) => {
                    if list.len() > 1 {
                        let all: Vec<&str> = list.iter().filter_map(|e| e["file"].as_str()).collect();
                        eprintln!(
                            "{} logs ({}); showing the latest (--file picks one)",
                            list.len(),
                            all.join(", ")
                        );
                    }
                    f
                }
                None => {
                    println!(
                        "{instance} has no unreplicated-transaction log: nothing was ever rolled off it"
                    );
                    return Ok(());
                }
            }
        }
    };
    let text = engine_get(k, instance, &format!("/v1/lost-transactions/{file}")).await?;
    if output == "json" {
        println!("{text}");
        return Ok(());
    }
    let log: LostLog = serde_json::from_str(&text).map_err(|e| format!("unexpected answer: {e}"))?;
    let h = &log.header;
    println!(
        "{file}: {} transactions rolled off {} (seqnos {}..={}): {}",
        h.transactions, h.instance, h.from_seqno, h.to_seqno, h.reason
    );
    for t in &log.transactions {
        let changes: Vec<String> = t
            .changes
            .iter()
            .map(|c| {
                let key = c.key.clone().unwrap_or_else(|| format!("0x{}", c.key_hex));
                match (&c.after, &c.after_hex) {
                    (Some(a), _) => format!("SET {key} {a}"),
                    (None, Some(h)) => format!("SET {key} 0x{h}"),
                    (None, None) => format!("DEL {key}"),
                }
            })
            .collect();
        println!("seqno {} (stream {} seqno {}): {}", t.seqno, t.stream, t.stream_seqno, changes.join("; "));
    }
    println!(
        "To re-apply them, run each command against the family's primary (after checking it still makes sense)."
    );
    Ok(())
}

/// An unreplicated-transaction log as the engine serves it (docs/lost-transactions.md).
#[derive(serde::Deserialize)]
struct LostLog {
    header: LostHeader,
    transactions: Vec<LostTransaction>,
}

#[derive(serde::Deserialize)]
struct LostHeader {
    instance: String,
    from_seqno: u64,
    to_seqno: u64,
    transactions: u64,
    reason: String,
}

#[derive(serde::Deserialize)]
struct LostTransaction {
    seqno: u64,
    stream: u8,
    stream_seqno: u64,
    changes: Vec<LostChange>,
}

#[derive(serde::Deserialize)]
struct LostChange {
    #[serde(default)]
    key: Option<String>,
    key_hex: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    after_hex: Option<String>,
}

/// One member as `status` shows it.
#[derive(serde::Serialize)]
struct MemberLine {
    name: String,
    role: Option<String>,
    phase: Option<String>,
    term: Option<u64>,
    seqno: Option<u64>,
    streams: BTreeMap<u8, u64>,
    source: Option<String>,
    link: Option<String>,
    state: Option<String>,
    backlog: Option<u64>,
    lag: Option<String>,
    last_rollback: Option<String>,
    depth: usize,
}

async fn status(k: &Kube, only: Option<&str>, output: &str) -> Result<(), Failure> {
    let families = k.families().list(&ListParams::default()).await.map_err(|e| {
        format!("cannot list families ({}); is the Strand operator (and its CRDs) installed?", chain(&e))
    })?;
    let instances: BTreeMap<String, Instance> = k
        .instances()
        .list(&ListParams::default())
        .await
        .map_err(|e| chain(&e))?
        .items
        .into_iter()
        .map(|i| (i.name_any(), i))
        .collect();
    let links = k.links().list(&ListParams::default()).await.map_err(|e| chain(&e))?.items;
    let mut out = Vec::new();
    let mut shown = 0;
    for fam in families.items.iter().filter(|f| only.is_none_or(|o| f.name_any() == o)) {
        shown += 1;
        let st = fam.status.clone().unwrap_or_default();
        // The tree: each member under the one it currently receives from.
        let source_of: BTreeMap<String, (String, &ReplicationLink)> = links
            .iter()
            .filter(|l| l.spec.mode == Mode::Bc)
            .filter_map(|l| {
                let s = l.status.as_ref()?;
                Some((s.current_target.clone()?, (s.current_source.clone()?, l)))
            })
            .collect();
        let mut lines = Vec::new();
        let mut order: Vec<(String, usize)> = st.primary.iter().map(|p| (p.clone(), 0)).collect();
        let mut i = 0;
        while let Some((name, depth)) = order.get(i).cloned() {
            let mut children: Vec<&String> =
                source_of.iter().filter(|(_, (src, _))| *src == name).map(|(t, _)| t).collect();
            children.sort();
            for c in children.into_iter().rev() {
                if !order.iter().any(|(n, _)| n == c) {
                    order.insert(i + 1, (c.clone(), depth + 1));
                }
            }
            i += 1;
        }
        for m in &st.members {
            if !order.iter().any(|(n, _)| n == m) {
                order.push((m.clone(), 1));
            }
        }
        for (name, depth) in order {
            let s = instances.get(&name).and_then(|i| i.status.clone()).unwrap_or_default();
            let link = source_of.get(&name);
            let ls = link.and_then(|(_, l)| l.status.clone()).unwrap_or_default();
            lines.push(MemberLine {
                name: name.clone(),
                role: s.role.clone(),
                phase: s.phase.clone(),
                term: s.term,
                seqno: s.journal_seqno,
                streams: s.streams.iter().map(|x| (x.stream, x.seqno)).collect(),
                source: link.map(|(src, _)| src.clone()),
                link: link.map(|(_, l)| l.name_any()),
                state: ls.state.clone(),
                backlog: ls.backlog,
                lag: ls.lag.clone(),
                last_rollback: s.last_rollback.as_ref().map(|r| {
                    format!(
                        "rolled off {}..={} ({}) → {}",
                        r.from_seqno, r.to_seqno, r.transactions, r.log_path
                    )
                }),
                depth,
            });
        }
        let si: Vec<serde_json::Value> = links
            .iter()
            .filter(|l| l.spec.mode == Mode::Si && l.status.as_ref().and_then(|s| s.family.as_deref()) == Some(fam.name_any().as_str()))
            .map(|l| {
                let s = l.status.clone().unwrap_or_default();
                serde_json::json!({
                    "link": l.name_any(), "from": s.current_source, "to": s.current_target, "stream": s.stream,
                    "state": s.state, "backlog": s.backlog, "lag": s.lag, "reason": s.reason,
                })
            })
            .collect();
        if output == "json" {
            out.push(serde_json::json!({
                "family": fam.name_any(), "primary": st.primary, "term": st.term, "phase": st.phase,
                "message": st.message, "procedure": st.procedure, "members": lines, "si": si,
                "history": st.history,
            }));
            continue;
        }
        println!(
            "FAMILY {}  primary {}  term {}  {}{}",
            fam.name_any(),
            st.primary.as_deref().unwrap_or("-"),
            st.term,
            st.phase.as_deref().unwrap_or("?"),
            st.message.as_deref().map(|m| format!(" — {m}")).unwrap_or_default()
        );
        if let Some(p) = &st.procedure {
            println!(
                "  {} {} → {} (term {}): step {} since {}",
                p.kind,
                p.from.as_deref().unwrap_or("?"),
                p.to.as_deref().unwrap_or("?"),
                p.term,
                p.step,
                p.steps.last().map(|s| s.at.as_str()).unwrap_or("?")
            );
        }
        for l in &lines {
            let indent = "  ".repeat(l.depth + 1);
            let streams = if l.streams.len() > 1 {
                format!(
                    " streams {}",
                    l.streams.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ")
                )
            } else {
                String::new()
            };
            let via = match (&l.source, &l.state) {
                (Some(src), Some(state)) => format!(
                    "  ← {src} {state}{}{}",
                    l.backlog.map(|b| format!(" backlog {b}")).unwrap_or_default(),
                    l.lag.as_deref().map(|g| format!(" lag {g}")).unwrap_or_default()
                ),
                _ => String::new(),
            };
            println!(
                "{indent}{:<12} {:<22} term {:<3} seqno {:<8}{streams}{via}",
                l.name,
                l.role.clone().or(l.phase.clone()).unwrap_or_else(|| "?".into()),
                l.term.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                l.seqno.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            );
            if let Some(r) = &l.last_rollback {
                println!("{indent}  last rollback: {r}");
            }
        }
        for s in &si {
            println!(
                "  ⇒ SI {} → {} (stream {}) {}{}",
                s["from"].as_str().unwrap_or("?"),
                s["to"].as_str().unwrap_or("?"),
                s["stream"].as_u64().map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                s["state"].as_str().unwrap_or("?"),
                s["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default()
            );
        }
        if let Some(r) = st.history.last() {
            let start = r.steps.first().map(|s| s.at.as_str()).unwrap_or("?");
            let end = r.steps.last().map(|s| s.at.as_str()).unwrap_or("?");
            println!(
                "  last {}: {} → {} {} (term {}, {start} … {end}){}",
                r.kind.to_lowercase(),
                r.from.as_deref().unwrap_or("?"),
                r.to.as_deref().unwrap_or("?"),
                r.outcome,
                r.term,
                r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
        println!();
    }
    if let Some(o) = only
        && shown == 0
    {
        return Err(format!("no family {o} in namespace {}; `kubectl strand status` lists them", k.ns));
    }
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    } else if shown == 0 {
        println!("no families in namespace {} yet (a family appears once an Instance exists)", k.ns);
    }
    Ok(())
}
