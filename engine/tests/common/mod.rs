//! Test harness: real `strand-engine` processes on ephemeral ports, talked to over real TCP
//! with real clients, and over the real admin socket.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod cutdisk;
pub mod proxy;
pub mod writers;

/// xorshift64*: a tiny deterministic generator so a failing seed replays exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
}

/// A randomised test's seed (from `seed_var`, else the clock) and its number of rounds (from
/// `rounds_var`, else `default_rounds`).
pub fn seed_and_rounds(seed_var: &str, rounds_var: &str, default_rounds: usize) -> (u64, usize) {
    let seed: u64 = std::env::var(seed_var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
            | 1
    });
    let rounds = std::env::var(rounds_var).ok().and_then(|s| s.parse().ok()).unwrap_or(default_rounds);
    (seed, rounds)
}

/// The finished lost-transaction logs of a data directory (`.pending` ones excluded), sorted.
pub fn lost_logs(data_dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("lost-transactions"))
        .map(|d| {
            d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "jsonl")).collect()
        })
        .unwrap_or_default();
    logs.sort();
    logs
}

/// The seqnos a lost-transaction log holds, in its order (read by `ctl lost-transactions show`).
pub fn lost_seqnos(data_dir: &Path, log: &Path) -> Vec<u64> {
    let shown =
        ctl_json(data_dir, &["lost-transactions", "show", log.to_str().expect("utf8 path"), "--json"]);
    shown["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| t["seqno"].as_u64().expect("seqno"))
        .collect()
}

/// How long a server may take to become ready after start (a debug build replaying a large
/// file on a loaded 2-core machine included).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_strand-engine")
}

/// A running engine process. Killed (SIGKILL) on drop if still running.
pub struct Server {
    pub data_dir: PathBuf,
    pub name: String,
    pub child: Child,
    pub resp_port: u16,
    pub log: PathBuf,
    extra: Vec<String>,
    /// The engine binary this server runs (the build under test unless switched).
    pub binary: PathBuf,
}

/// The same source built as the next minor release (`--features next-version`: format 2,
/// replication protocol 2), for the hot-standby upgrade tests. Built into `target/next` on
/// first use (or taken from `STRAND_ENGINE_NEXT`).
pub fn next_binary() -> PathBuf {
    if let Ok(path) = std::env::var("STRAND_ENGINE_NEXT") {
        return PathBuf::from(path);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_owned();
    let target = workspace.join("target").join("next");
    let binary = target.join("debug").join("strand-engine");
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "strand-engine", "--features", "next-version", "--target-dir"])
            .arg(&target)
            .current_dir(&workspace)
            .status()
            .expect("run cargo build for the next-version engine");
        assert!(status.success(), "building the next-version engine failed");
        *built = true;
    }
    binary
}

impl Server {
    /// Starts a server for instance `name` in `data_dir` with extra `run` flags.
    pub fn start(data_dir: &Path, name: &str, extra: &[&str]) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn(data_dir, name, extra)
    }

    /// [`Server::start`] with extra environment variables (test hooks).
    pub fn start_with_env(data_dir: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn_binary(Path::new(binary()), data_dir, name, extra, env)
    }

    fn spawn(data_dir: &Path, name: &str, extra: Vec<String>) -> Server {
        Self::spawn_binary(Path::new(binary()), data_dir, name, extra, &[])
    }

    fn spawn_binary(
        program: &Path,
        data_dir: &Path,
        name: &str,
        extra: Vec<String>,
        env: &[(&str, &str)],
    ) -> Server {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("open log");
        // Tests run on shared disks that may be fuller than the production default reserve.
        let reserve: &[&str] = if extra.iter().any(|a| a == "--disk-reserve-bytes") {
            &[]
        } else {
            &["--disk-reserve-bytes", "0"]
        };
        let child = Command::new(program)
            .arg("run")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--name")
            .arg(name)
            .arg("--resp-addr")
            .arg("127.0.0.1:0")
            .args(reserve)
            .args(&extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn strand-engine");
        let mut server = Server {
            data_dir: data_dir.to_owned(),
            name: name.to_owned(),
            child,
            resp_port: 0,
            log,
            extra,
            binary: program.to_owned(),
        };
        server.wait_ready();
        // A replication address is part of an instance's identity for its peers: keep the port
        // first bound (from :0) across restarts, as a real deployment keeps its address.
        if let Some(i) = server.extra.iter().position(|a| a == "--repl-addr")
            && server.extra.get(i + 1).is_some_and(|a| a.ends_with(":0"))
        {
            let bound = server.status()["repl_addr"].as_str().expect("repl_addr").to_owned();
            server.extra[i + 1] = bound;
        }
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                panic!("server exited during start with {status}; log:\n{}", self.log_text());
            }
            if let Ok((200, body)) = admin(&self.data_dir, "GET", "/readyz", None) {
                assert!(body.contains("ready"));
                let status = self.status();
                self.resp_port = status["resp_port"].as_u64().expect("resp_port") as u16;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.resp_port)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url()).expect("client").get_connection().expect("connect")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.resp_port)
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, body) = admin(&self.data_dir, "GET", "/v1/status", None).expect("status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status json")
    }

    pub fn verify(&self) -> serde_json::Value {
        let (code, body) = admin(&self.data_dir, "GET", "/v1/verify", None).expect("verify");
        assert_eq!(code, 200, "journal verification failed: {body}");
        serde_json::from_str(&body).expect("verify json")
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already stopped
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "server did not stop cleanly: {status}; log:\n{}", self.log_text());
    }

    /// Starts the same instance again with the same flags.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let program = self.binary.clone();
        self.start_again(&program);
    }

    /// Stops it cleanly (SIGTERM) and starts it again on another binary, same data and flags:
    /// an upgrade or a downgrade of the binary.
    pub fn restart_on(&mut self, program: &Path) {
        self.stop();
        self.start_again(program);
    }

    fn start_again(&mut self, program: &Path) {
        self.binary = program.to_owned();
        let mut next =
            Self::spawn_binary(program, &self.data_dir.clone(), &self.name.clone(), self.extra.clone(), &[]);
        std::mem::swap(&mut self.child, &mut next.child);
        self.resp_port = next.resp_port;
        // `next` now holds the old, already reaped child; dropping it is harmless.
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One admin call over the Unix socket: (status, body).
pub fn admin(
    data_dir: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = UnixStream::connect(data_dir.join("admin.sock"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: strand\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    parse_http(&response)
}

pub fn parse_http(response: &str) -> std::io::Result<(u16, String)> {
    let code: u16 = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {response:?}")))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Sends raw bytes on a fresh connection and returns everything the server answers until it
/// closes the connection or goes quiet.
pub fn raw(addr: &str, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_millis(1500))).expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false), // timed out: still open
        }
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("strand-test-").tempdir().expect("tempdir")
}

/// Runs `strand-engine ctl --data-dir DIR ARGS…` and returns its JSON answer, panicking with
/// the error text on failure.
pub fn ctl_json(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = ctl(data_dir, args);
    assert!(ok, "ctl {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?} printed non-JSON ({e}): {out}"))
}

/// Runs `strand-engine ctl --data-dir DIR ARGS…`: (success, stdout, stderr).
pub fn ctl(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .arg("ctl")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `strand-engine run` for a new instance in `data_dir` with `args`, expecting it to
/// refuse to start; its stderr.
pub fn run_fails(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg("run")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--name", "Refused", "--resp-addr", "127.0.0.1:0"])
        .args(args)
        .output()
        .expect("run the engine");
    assert!(!out.status.success(), "the engine started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// How long replication may take to reach an expected state on a loaded 2-core machine
/// (a source retries a failed connection within 5 s).
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `check` until it returns true; panics after `REPLICATION_TIMEOUT` naming `what`.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + REPLICATION_TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Server {
    /// Waits until exactly `n` clients are blocked (BLPOP and friends), as INFO reports it.
    pub fn wait_blocked(&self, n: usize) {
        let mut c = self.client();
        wait_until(&format!("{n} blocked clients on {}", self.name), || {
            let info: String = redis::cmd("INFO").arg("clients").query(&mut c).expect("INFO");
            info.contains(&format!("blocked_clients:{n}\r\n"))
        });
    }

    /// Opens a raw connection and sends `command` on it without reading the reply (a client
    /// about to block).
    pub fn send_raw(&self, command: &[&str]) -> std::net::TcpStream {
        let mut out = format!("*{}\r\n", command.len());
        for arg in command {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut stream = std::net::TcpStream::connect(self.addr()).expect("connect");
        stream.write_all(out.as_bytes()).expect("write");
        stream
    }

    pub fn start_replicating(root: &Path, name: &str) -> Server {
        Self::start_replicating_with(root, name, &[])
    }

    /// Starts a supplementary instance that can replicate (created as such on first start).
    pub fn start_supplementary(root: &Path, name: &str) -> Server {
        Self::start_replicating_with(root, name, &["--supplementary"])
    }

    /// Starts an instance that can replicate, with more `run` flags.
    pub fn start_replicating_with(root: &Path, name: &str, more: &[&str]) -> Server {
        let secret = root.join("repl-secret");
        if !secret.exists() {
            std::fs::write(&secret, "test-replication-secret\n").expect("write secret");
        }
        let data = root.join(name);
        let mut args =
            vec!["--repl-addr", "127.0.0.1:0", "--repl-secret-file", secret.to_str().expect("utf8 path")];
        args.extend_from_slice(more);
        Server::start(&data, name, &args)
    }

    /// Last stream seqno of `stream` as `status` reports it (0 if the stream is absent).
    pub fn stream_seqno(&self, stream: u64) -> u64 {
        let status = self.status();
        status["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .find(|s| s["stream"] == stream)
            .map_or(0, |s| s["seqno"].as_u64().expect("seqno"))
    }

    /// Field `field` of this instance's stream to `receiver` as `backlog` reports it (state,
    /// last_error, …), as text ("" when absent).
    pub fn source_field(&self, receiver: &str, field: &str) -> String {
        let backlog = self.ctl(&["backlog", "--json"]);
        let sources = backlog.as_array().expect("backlog");
        let source = sources.iter().find(|s| s["receiver"] == receiver).expect("a stream to the receiver");
        source[field].as_str().unwrap_or_default().to_owned()
    }

    /// Runs a ctl command that must fail; returns its error text.
    pub fn ctl_fails(&self, args: &[&str]) -> String {
        let (ok, out, err) = ctl(&self.data_dir, args);
        assert!(!ok, "ctl {args:?} should have failed but printed {out}");
        err
    }

    /// Every journal entry the journal holds: (seqno, kind, stream, stream seqno, keys written).
    pub fn journal(&self) -> Vec<JournalEntry> {
        let mut out = Vec::new();
        let status = self.status();
        let last = status["journal_seqno"].as_u64().expect("seqno");
        // From where the journal begins (trimmed, or seeded from a snapshot).
        let mut from = status["journal"]["first_seqno"].as_u64().expect("first seqno").max(1);
        while from <= last {
            let to = (from + 999).min(last);
            let (code, body) =
                admin(&self.data_dir, "GET", &format!("/v1/journal?from={from}&to={to}"), None)
                    .expect("journal");
            assert_eq!(code, 200, "{body}");
            let entries: Vec<serde_json::Value> = serde_json::from_str(&body).expect("journal json");
            for e in entries {
                let keys = e["changes"]
                    .as_array()
                    .expect("changes")
                    .iter()
                    .map(|c| {
                        String::from_utf8(from_hex(c["key_hex"].as_str().expect("key"))).expect("utf8 key")
                    })
                    .collect();
                out.push(JournalEntry {
                    seqno: e["seqno"].as_u64().expect("seqno"),
                    kind: e["kind"].as_str().expect("kind").to_owned(),
                    stream: e["stream"].as_u64().expect("stream"),
                    stream_seqno: e["stream_seqno"].as_u64().expect("stream_seqno"),
                    keys,
                });
            }
            from = to + 1;
        }
        out
    }

    pub fn repl_addr(&self) -> String {
        self.status()["repl_addr"].as_str().expect("repl_addr").to_owned()
    }

    pub fn seqno(&self) -> u64 {
        self.status()["journal_seqno"].as_u64().expect("seqno")
    }

    /// Ardmore, promoted, streaming over BC to BrynMawr, a receiver: the family most tests
    /// start from.
    pub fn bc_pair(root: &Path) -> (Server, Server) {
        let ardmore = Server::start_replicating(root, "Ardmore");
        let brynmawr = Server::start_replicating(root, "BrynMawr");
        ardmore.ctl(&["promote"]);
        brynmawr.ctl(&["receiver", "start"]);
        ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
        (ardmore, brynmawr)
    }

    pub fn ctl(&self, args: &[&str]) -> serde_json::Value {
        ctl_json(&self.data_dir, args)
    }

    /// The value of one series of the engine's `/metrics` (fails if it is not exported).
    pub fn metric(&self, series: &str) -> f64 {
        let metrics = admin(&self.data_dir, "GET", "/metrics", None).expect("metrics").1;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("no series {series} in\n{metrics}"))
    }
}

/// Checkpoints every 64 KiB and journal segments of 16 KiB: many checkpoints (and so trims)
/// and rotations a second.
pub const SMALL_WAL: [&str; 4] = ["--checkpoint-bytes", "65536", "--journal-segment-bytes", "16384"];

/// [`SMALL_WAL`] and `more`.
pub fn small_wal<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut out = SMALL_WAL.to_vec();
    out.extend_from_slice(more);
    out
}

/// One journal entry as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub seqno: u64,
    pub kind: String,
    pub stream: u64,
    pub stream_seqno: u64,
    pub keys: Vec<String>,
}

pub fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}
