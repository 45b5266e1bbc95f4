//! RESP commands: parsing arguments into a [`Command`] and executing it.
//!
//! Data commands are rows of one table ([`SPECS`]): name, arity, flags, key positions and
//! the function that runs it against a [`Db`] (the Redis data model over the storage's
//! nodes, see [`db`]). They live by type: [`strings`], [`keys`] (the key space and expiry),
//! [`hashes`], [`sets`]. [`server`] answers INFO, ROLE, COMMAND and CONFIG.
//!
//! Connection-level commands (AUTH, HELLO, MULTI, WATCH…) are parsed here but executed by the
//! connection, which owns that state.
//!
//! Reads outside a transaction run on a committed snapshot; writes, and every command inside
//! MULTI/EXEC, run in the writer thread against a [`TxnView`].

pub mod bits;
pub mod db;
pub mod docs;
pub mod dump;
pub mod hashes;
pub mod keys;
pub mod lists;
pub mod server;
pub mod sets;
pub mod sort;
pub mod strings;
pub mod zindex;
pub mod zsets;

use std::sync::LazyLock;

use db::Db;

use crate::frame::Frame;
use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::storage::writer::{Abort, TxnView};

pub use crate::base::format_double;

/// Runs a data command: arguments after the name, against the data model.
pub type Handler = fn(&mut Db<'_>, &mut Args) -> Result<Frame, Abort>;

/// Static facts about a command, as `COMMAND` reports them and as arity checks use them.
/// `arity` follows Redis: positive is exact (including the name), negative is a minimum.
pub struct Spec {
    pub name: &'static str,
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    /// `None` for the commands the connection runs itself.
    pub run: Option<Handler>,
}

pub const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    first_key: i64,
    last_key: i64,
    step: i64,
) -> Spec {
    Spec { name, arity, flags, first_key, last_key, step, run: None }
}

/// A data command's row.
pub const fn data(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    run: Handler,
) -> Spec {
    Spec { name, arity, flags, first_key: keys.0, last_key: keys.1, step: keys.2, run: Some(run) }
}

pub const W: &[&str] = &["write"];
pub const WF: &[&str] = &["write", "fast"];
pub const R: &[&str] = &["readonly"];
pub const RF: &[&str] = &["readonly", "fast"];
const C: &[&str] = &["fast", "no-auth"];
/// One key in position 1.
pub const K1: (i64, i64, i64) = (1, 1, 1);
/// Every argument is a key.
pub const KALL: (i64, i64, i64) = (1, -1, 1);
pub const NOKEY: (i64, i64, i64) = (0, 0, 0);

/// The commands the connection runs itself. Names are lowercase, as COMMAND reports them.
const CONNECTION: &[Spec] = &[
    spec("auth", -2, C, 0, 0, 0),
    spec("client", -2, C, 0, 0, 0),
    spec("command", -1, C, 0, 0, 0),
    spec("config", -2, C, 0, 0, 0),
    spec("discard", 1, C, 0, 0, 0),
    spec("echo", 2, C, 0, 0, 0),
    spec("exec", 1, C, 0, 0, 0),
    spec("function", -2, C, 0, 0, 0),
    spec("hello", -1, C, 0, 0, 0),
    spec("info", -1, C, 0, 0, 0),
    spec("multi", 1, C, 0, 0, 0),
    spec("ping", -1, C, 0, 0, 0),
    spec("quit", -1, C, 0, 0, 0),
    spec("reset", 1, C, 0, 0, 0),
    spec("role", 1, C, 0, 0, 0),
    spec("scan", -2, R, 0, 0, 0),
    spec("hscan", -3, R, 1, 1, 1),
    spec("sscan", -3, R, 1, 1, 1),
    spec("zscan", -3, R, 1, 1, 1),
    spec("select", 2, C, 0, 0, 0),
    spec("unwatch", 1, C, 0, 0, 0),
    spec("wait", 3, &["noscript"], 0, 0, 0),
    spec("watch", -2, C, 1, -1, 1),
];

/// Every command the data port knows.
pub fn specs() -> impl Iterator<Item = &'static Spec> {
    CONNECTION
        .iter()
        .chain(strings::SPECS)
        .chain(keys::SPECS)
        .chain(hashes::SPECS)
        .chain(sets::SPECS)
        .chain(lists::SPECS)
        .chain(zsets::SPECS)
        .chain(bits::SPECS)
        .chain(dump::SPECS)
        .chain(sort::SPECS)
}

/// The command table by lower-case name. Hashed with foldhash, not SipHash, which showed
/// in the profile of GET at 50 clients: the table is fixed, so no one can choose
/// colliding names.
static BY_NAME: LazyLock<foldhash::HashMap<&'static [u8], &'static Spec>> =
    LazyLock::new(|| specs().map(|s| (s.name.as_bytes(), s)).collect());

pub fn find_spec(name: &str) -> Option<&'static Spec> {
    BY_NAME.get(name.as_bytes()).copied()
}

/// [`find_spec`] of a command name as sent, in any case (lowered on the stack: no name is
/// longer than the buffer).
fn find_spec_bytes(name: &[u8]) -> Option<&'static Spec> {
    let mut lower = [0u8; 32];
    let lower = lower.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    BY_NAME.get(&*lower).copied()
}

/// A parsed command with validated arguments.
#[derive(Debug, Clone)]
pub enum Command {
    // Connection.
    Ping(Option<Vec<u8>>),
    Echo(Vec<u8>),
    Hello {
        proto: Option<u8>,
        auth: Option<(Vec<u8>, Vec<u8>)>,
        setname: Option<Vec<u8>>,
    },
    Auth {
        user: Option<Vec<u8>>,
        password: Vec<u8>,
    },
    Select(i64),
    Quit,
    Reset,
    ClientSetName(Vec<u8>),
    ClientGetName,
    ClientId,
    ClientSetInfo,
    ClientInfo,
    ClientList,
    ClientNoEvict,
    ClientUnblock {
        id: u64,
        error: bool,
    },
    // Transactions.
    Multi,
    Exec,
    Discard,
    Watch(Vec<Vec<u8>>),
    Unwatch,
    // Server.
    Info(Vec<String>),
    Role,
    Wait {
        replicas: usize,
        timeout_ms: u64,
    },
    CommandInfo(Vec<String>),
    CommandCount,
    CommandList,
    CommandDocs(Vec<String>),
    ConfigGet(Vec<String>),
    ConfigSet(Vec<(String, Vec<u8>)>),
    ConfigResetStat,
    /// FUNCTION FLUSH / LIST: Strand has no scripting, so there are never functions.
    FunctionEmpty(bool),
    // Data.
    Scan {
        cursor: u64,
        pattern: Option<Vec<u8>>,
        count: usize,
        target: keys::ScanTarget,
    },
    Data {
        spec: &'static Spec,
        args: Vec<Vec<u8>>,
    },
}

/// What kind of execution a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Handled by the connection (state, introspection).
    Connection,
    /// Reads the data: a snapshot outside MULTI, the transaction view inside.
    Read,
    /// Changes the data: always through the writer.
    Write,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl From<Frame> for Abort {
    fn from(frame: Frame) -> Abort {
        match frame {
            Frame::Error(message) => Abort::Command(message),
            other => Abort::Command(format!("ERR {other:?}")),
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    crate::storage::now_micros() / 1000
}

impl Command {
    pub fn class(&self) -> Class {
        match self {
            Command::Data { spec, .. } if spec.flags.contains(&"write") => Class::Write,
            Command::Data { .. } | Command::Scan { .. } => Class::Read,
            _ => Class::Connection,
        }
    }

    /// Parses a request. The error is the reply to send (the connection stays open).
    pub fn parse(args: Vec<Vec<u8>>) -> Result<(Command, &'static str), Frame> {
        let mut args = args.into_iter();
        let Some(name_bytes) = args.next() else {
            return Err(Frame::error("ERR empty command"));
        };
        let rest: Vec<Vec<u8>> = args.collect();
        let Some(spec) = find_spec_bytes(&name_bytes) else {
            let preview: Vec<String> =
                rest.iter().take(4).map(|a| format!("'{}'", String::from_utf8_lossy(a))).collect();
            return Err(Frame::error(format!(
                "ERR unknown command '{}', with args beginning with: {}",
                String::from_utf8_lossy(&name_bytes),
                preview.join(" ")
            )));
        };
        let argc = i64::try_from(rest.len() + 1).unwrap_or(i64::MAX);
        if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
            return Err(Frame::error(format!("ERR wrong number of arguments for '{}' command", spec.name)));
        }
        if spec.run.is_some() {
            let keys = key_positions(spec, rest.len());
            for i in keys {
                if let Some(k) = rest.get(i) {
                    check_key_len(k.len())?;
                }
            }
            return Ok((Command::Data { spec, args: rest }, spec.name));
        }
        let mut a = Args { name: spec.name, items: rest.into_iter() };
        let command = match spec.name {
            "ping" => Command::Ping(a.optional()),
            "echo" => Command::Echo(a.next_arg()?),
            "hello" => parse_hello(&mut a)?,
            "auth" => {
                let first = a.next_arg()?;
                match a.optional() {
                    Some(password) => Command::Auth { user: Some(first), password },
                    None => Command::Auth { user: None, password: first },
                }
            }
            "select" => Command::Select(a.integer()?),
            "quit" => Command::Quit,
            "reset" => Command::Reset,
            "client" => parse_client(&mut a)?,
            "multi" => Command::Multi,
            "exec" => Command::Exec,
            "discard" => Command::Discard,
            "watch" => Command::Watch(a.keys_rest()?),
            "unwatch" => Command::Unwatch,
            "info" => Command::Info(a.strings_rest()),
            "role" => Command::Role,
            "wait" => {
                let replicas = usize::try_from(a.integer()?)
                    .map_err(|_| Frame::error("ERR numreplicas must be a non-negative integer"))?;
                let timeout_ms =
                    u64::try_from(a.integer()?).map_err(|_| Frame::error("ERR timeout is negative"))?;
                Command::Wait { replicas, timeout_ms }
            }
            "command" => parse_command(&mut a)?,
            "function" => {
                let sub = a.string()?.to_ascii_lowercase();
                a.strings_rest();
                match sub.as_str() {
                    "flush" => Command::FunctionEmpty(true),
                    "list" => Command::FunctionEmpty(false),
                    _ => {
                        return Err(Frame::error(format!(
                            "ERR FUNCTION {} is not supported: Strand has no scripting (docs/compatibility.md)",
                            sub.to_ascii_uppercase()
                        )));
                    }
                }
            }
            "config" => server::parse_config(&mut a)?,
            "scan" => keys::parse_scan(&mut a)?,
            "hscan" => keys::parse_element_scan(&mut a, crate::storage::node::Kind::Hash)?,
            "sscan" => keys::parse_element_scan(&mut a, crate::storage::node::Kind::Set)?,
            "zscan" => keys::parse_element_scan(&mut a, crate::storage::node::Kind::ZSet)?,
            other => unreachable!("command {other} has a spec but no parser"),
        };
        a.finish()?;
        Ok((command, spec.name))
    }

    /// Runs a data command against `db` (a copy of its arguments: a command that may run
    /// again, inside MULTI or while blocked, keeps them).
    pub fn run(&self, db: &mut Db<'_>) -> Result<Frame, Abort> {
        match self {
            Command::Data { spec, args } => Command::run_data(spec, args.clone(), db),
            other => other.run_other(db),
        }
    }

    /// [`Command::run`] of a command that runs once: its arguments are handed over, not copied.
    pub fn run_once(self, db: &mut Db<'_>) -> Result<Frame, Abort> {
        match self {
            Command::Data { spec, args } => Command::run_data(spec, args, db),
            other => other.run_other(db),
        }
    }

    fn run_data(spec: &'static Spec, args: Vec<Vec<u8>>, db: &mut Db<'_>) -> Result<Frame, Abort> {
        let run =
            spec.run.ok_or_else(|| Abort::Command(format!("ERR {} is not a data command", spec.name)))?;
        run(db, &mut Args { name: spec.name, items: args.into_iter() })
    }

    fn run_other(&self, _db: &mut Db<'_>) -> Result<Frame, Abort> {
        match self {
            Command::Ping(None) => Ok(Frame::Simple("PONG".into())),
            Command::Ping(Some(m)) | Command::Echo(m) => Ok(Frame::Bulk(m.clone())),
            other => Err(Abort::Command(format!("ERR {other:?} is not allowed here"))),
        }
    }

    /// Whether MULTI queues this command (data commands, and PING and ECHO as Redis does).
    pub fn queues_in_multi(&self) -> bool {
        match self {
            Command::Data { spec, .. } => !spec.flags.contains(&"no-multi"),
            Command::Ping(_) | Command::Echo(_) => true,
            _ => false,
        }
    }

    /// Executes a read command against a committed snapshot; `counts` are the store's key
    /// counts for DBSIZE.
    /// `now_ms`: the time expiry is judged at — when the snapshot was opened, so that a key
    /// is seen as it was then.
    pub fn execute_read(
        self,
        snapshot: &crate::storage::Snapshot,
        counts: Option<crate::storage::KeyCounts>,
        now_ms: u64,
    ) -> Result<Frame, Abort> {
        let mut kv = db::ReadOnly(snapshot);
        let mut db = Db { kv: &mut kv, now_ms, counts };
        self.run_once(&mut db)
    }

    /// Whether it reads the key counts the writer keeps (DBSIZE; without them it would
    /// walk the keys).
    pub fn counts_keys(&self) -> bool {
        matches!(self, Command::Data { spec, .. } if spec.name == "dbsize")
    }

    /// Executes a read or write command inside the writer.
    pub fn execute_in_txn(&self, view: &mut TxnView<'_, '_>) -> Result<Frame, Abort> {
        let mut db = Db { kv: view, now_ms: now_ms(), counts: None };
        self.run(&mut db)
    }

    /// [`Command::execute_in_txn`] of a command that runs once.
    pub fn execute_once_in_txn(self, view: &mut TxnView<'_, '_>) -> Result<Frame, Abort> {
        let mut db = Db { kv: view, now_ms: now_ms(), counts: None };
        self.run_once(&mut db)
    }

    /// The keys this command names (for WATCH-free bookkeeping and blocking).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            Command::Data { spec, args } => {
                key_positions(spec, args.len()).filter_map(|i| args.get(i).map(Vec::as_slice)).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Indexes (into the arguments after the name) of a command's keys.
fn key_positions(spec: &Spec, argc: usize) -> impl Iterator<Item = usize> {
    let n = i64::try_from(argc).unwrap_or(i64::MAX);
    let (first, step) = (spec.first_key, spec.step.max(1));
    let last = if spec.last_key < 0 { n + spec.last_key + 1 } else { spec.last_key };
    let range = if first <= 0 { 1..1 } else { first..last.min(n) + 1 };
    range.step_by(usize::try_from(step).unwrap_or(1)).filter_map(|i| usize::try_from(i - 1).ok())
}

/// `[a, b, c, d]` → `[(a, b), (c, d)]` (an odd last item is dropped; callers check arity).
pub fn pair_up(items: Vec<Vec<u8>>) -> crate::storage::Pairs {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    out
}

pub fn check_key_len(len: usize) -> Result<(), Frame> {
    if len > KEY_BYTES_MAX {
        return Err(Frame::error(format!(
            "ERR key is too large ({len} bytes; the limit is {KEY_BYTES_MAX})"
        )));
    }
    Ok(())
}

pub fn check_value_len(len: usize) -> Result<(), Abort> {
    if len > VALUE_BYTES_MAX {
        return Err(Abort::Command(format!(
            "ERR string exceeds maximum allowed size ({VALUE_BYTES_MAX} bytes)"
        )));
    }
    Ok(())
}

/// Cursor over a command's arguments with typed accessors that produce Redis-style errors.
pub struct Args {
    name: &'static str,
    items: std::vec::IntoIter<Vec<u8>>,
}

impl Args {
    fn wrong_args(&self) -> Frame {
        Frame::error(format!("ERR wrong number of arguments for '{}' command", self.name))
    }

    pub fn next_arg(&mut self) -> Result<Vec<u8>, Frame> {
        match self.items.next() {
            Some(item) => Ok(item),
            None => Err(self.wrong_args()),
        }
    }

    pub fn optional(&mut self) -> Option<Vec<u8>> {
        self.items.next()
    }

    pub fn is_empty(&self) -> bool {
        self.items.len() == 0
    }

    pub fn string(&mut self) -> Result<String, Frame> {
        Ok(String::from_utf8_lossy(&self.next_arg()?).into_owned())
    }

    pub fn key(&mut self) -> Result<Vec<u8>, Frame> {
        check_key(self.next_arg()?)
    }

    pub fn integer(&mut self) -> Result<i64, Frame> {
        parse_integer(&self.next_arg()?)
            .ok_or_else(|| Frame::error("ERR value is not an integer or out of range"))
    }

    pub fn keys_rest(&mut self) -> Result<Vec<Vec<u8>>, Frame> {
        self.items.by_ref().map(check_key).collect()
    }

    pub fn strings_rest(&mut self) -> Vec<String> {
        self.items.by_ref().map(|s| String::from_utf8_lossy(&s).into_owned()).collect()
    }

    pub fn finish(&mut self) -> Result<(), Frame> {
        if self.items.len() == 0 { Ok(()) } else { Err(Frame::error("ERR syntax error")) }
    }

    /// The command's name, as COMMAND reports it.
    pub fn command(&self) -> &'static str {
        self.name
    }

    /// Arguments not yet taken.
    pub fn remaining(&self) -> usize {
        self.items.len()
    }

    /// The arguments not yet taken, in pairs (field value, key value …); Redis's arity
    /// error when they do not pair up.
    pub fn pairs(&mut self) -> Result<crate::storage::Pairs, Frame> {
        let rest = self.rest();
        if !rest.len().is_multiple_of(2) {
            return Err(self.wrong_args());
        }
        Ok(pair_up(rest))
    }

    /// Every argument not yet taken.
    pub fn rest(&mut self) -> Vec<Vec<u8>> {
        self.items.by_ref().collect()
    }

    /// A float argument (`inf`, `-inf` accepted; NaN refused), as Redis's `strtod` check.
    pub fn float(&mut self) -> Result<f64, Frame> {
        parse_float(&self.next_arg()?).ok_or_else(|| Frame::error("ERR value is not a valid float"))
    }

    /// An integer argument with a custom error.
    pub fn integer_or(&mut self, message: &str) -> Result<i64, Frame> {
        parse_integer(&self.next_arg()?).ok_or_else(|| Frame::error(message))
    }

    /// The next argument upper-cased (an option name).
    pub fn option(&mut self) -> Option<Vec<u8>> {
        self.items.next().map(|o| o.to_ascii_uppercase())
    }

    /// The next argument if it equals `word` (case-insensitive), consumed.
    pub fn take_if(&mut self, word: &str) -> bool {
        if self.items.as_slice().first().is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes())) {
            self.items.next();
            true
        } else {
            false
        }
    }
}

pub fn check_key(key: Vec<u8>) -> Result<Vec<u8>, Frame> {
    if key.len() > KEY_BYTES_MAX {
        return Err(Frame::error(format!(
            "ERR key is too large ({} bytes; the limit is {KEY_BYTES_MAX})",
            key.len()
        )));
    }
    Ok(key)
}

/// Parses a float as Redis does: decimal or exponent notation, `inf`/`+inf`/`-inf`; no
/// spaces, no NaN.
pub fn parse_float(bytes: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(bytes).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    let x = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ if lower.contains("nan") || lower.contains("inf") => return None,
        // A finite literal too large for a double is an error, as strtod's ERANGE.
        _ => s.parse::<f64>().ok().filter(|x| x.is_finite())?,
    };
    (!x.is_nan()).then_some(x)
}

/// Parses a Redis integer argument: optional '-', decimal digits, no spaces or '+'.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?;
    if s.is_empty() || s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) || s.starts_with("-0") {
        return None;
    }
    s.parse().ok()
}

fn parse_hello(a: &mut Args) -> Result<Command, Frame> {
    let proto = match a.optional() {
        None => None,
        Some(v) => match parse_integer(&v) {
            Some(2) => Some(2),
            Some(3) => Some(3),
            Some(_) => return Err(Frame::error("NOPROTO unsupported protocol version")),
            None => return Err(Frame::error("ERR Protocol version is not an integer or out of range")),
        },
    };
    let (mut auth, mut setname) = (None, None);
    while let Some(option) = a.optional() {
        match option.to_ascii_lowercase().as_slice() {
            b"auth" => auth = Some((a.next_arg()?, a.next_arg()?)),
            b"setname" => setname = Some(a.next_arg()?),
            _ => return Err(Frame::error("ERR syntax error in HELLO option")),
        }
    }
    Ok(Command::Hello { proto, auth, setname })
}

fn parse_client(a: &mut Args) -> Result<Command, Frame> {
    let sub = a.string()?.to_ascii_lowercase();
    match sub.as_str() {
        "setname" => {
            let name = a.next_arg()?;
            if name.iter().any(|b| !b.is_ascii_graphic()) {
                return Err(Frame::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            Ok(Command::ClientSetName(name))
        }
        "getname" => Ok(Command::ClientGetName),
        "unblock" => {
            let id = u64::try_from(a.integer()?).map_err(|_| Frame::error("ERR value is out of range"))?;
            let error = match a.optional().map(|o| o.to_ascii_uppercase()) {
                None => false,
                Some(o) if o == b"TIMEOUT" => false,
                Some(o) if o == b"ERROR" => true,
                Some(_) => return Err(Frame::error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")),
            };
            Ok(Command::ClientUnblock { id, error })
        }
        "info" => Ok(Command::ClientInfo),
        "list" => {
            a.strings_rest();
            Ok(Command::ClientList)
        }
        "no-evict" | "no-touch" => {
            let on = a.string()?.to_ascii_lowercase();
            if on != "on" && on != "off" {
                return Err(Frame::error("ERR syntax error"));
            }
            Ok(Command::ClientNoEvict)
        }
        "id" => Ok(Command::ClientId),
        "setinfo" => {
            // Client libraries announce themselves; accepted and ignored.
            a.next_arg()?;
            a.next_arg()?;
            Ok(Command::ClientSetInfo)
        }
        other => Err(Frame::error(format!(
            "ERR unknown subcommand '{other}'. Try CLIENT SETNAME, GETNAME, ID, INFO, LIST, SETINFO, NO-EVICT."
        ))),
    }
}

fn parse_command(a: &mut Args) -> Result<Command, Frame> {
    let Some(sub) = a.optional() else { return Ok(Command::CommandList) };
    match String::from_utf8_lossy(&sub).to_ascii_lowercase().as_str() {
        "count" => Ok(Command::CommandCount),
        "info" => Ok(Command::CommandInfo(a.strings_rest())),
        "docs" => Ok(Command::CommandDocs(a.strings_rest())),
        other => {
            Err(Frame::error(format!("ERR unknown subcommand '{other}'. Try COMMAND COUNT, INFO, DOCS.")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command is found by its name as sent, in any case, without a heap copy of it.
    #[test]
    fn every_command_is_found_in_any_case() {
        for spec in specs() {
            assert!(spec.name.len() <= 32, "{} is longer than find_spec_bytes's buffer", spec.name);
            let upper = spec.name.to_ascii_uppercase();
            assert!(find_spec_bytes(upper.as_bytes()).is_some_and(|s| s.name == spec.name), "{upper}");
        }
        assert!(find_spec_bytes(&[b'g'; 40]).is_none());
        assert!(find_spec_bytes(b"g\xffet").is_none());
    }

    /// COMMAND DOCS has a row for every command and none for a command it does not know.
    #[test]
    fn every_command_has_docs() {
        let all: Vec<&Spec> = specs().collect();
        assert_eq!(docs::drift(&all), (Vec::new(), Vec::new()));
    }

    /// docs/compatibility.md lists every command the data port knows as `yes` or
    /// `partial`, and its `yes`/`partial` rows name only commands the data port knows.
    #[test]
    fn the_compatibility_page_lists_every_command() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/compatibility.md"))
            .expect("docs/compatibility.md");
        const CONTAINERS: &[&str] = &["CLIENT", "CONFIG", "COMMAND", "MEMORY", "OBJECT", "FUNCTION"];
        let mut listed = std::collections::BTreeSet::new();
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (Some(commands), Some(state)) = (cells.get(1), cells.get(2)) else { continue };
            if *state != "yes" && *state != "partial" {
                continue;
            }
            let mut words = commands.split_whitespace().peekable();
            while let Some(word) = words.next() {
                let name = word.to_ascii_lowercase();
                assert!(
                    find_spec(&name).is_some(),
                    "compatibility.md says {word} works, but the data port does not know it"
                );
                listed.insert(name);
                if CONTAINERS.contains(&word)
                    && words.peek().is_some_and(|w| find_spec(&w.to_ascii_lowercase()).is_none())
                {
                    words.next(); // the subcommand
                }
            }
        }
        for spec in specs() {
            assert!(
                listed.contains(spec.name),
                "{} is missing from docs/compatibility.md",
                spec.name.to_ascii_uppercase()
            );
        }
    }
}
