//! RESP commands: parsing arguments into a [`Command`] and executing it.
//!
//! - [`strings`]: GET, SET, GETDEL, INCR/DECR family, APPEND, STRLEN, MGET, MSET.
//! - [`keys`]: DEL, EXISTS, SCAN, DBSIZE and the glob matcher behind SCAN MATCH.
//! - [`server`]: INFO, ROLE, COMMAND, CONFIG GET — introspection that redis-cli and
//!   redis-benchmark rely on.
//!
//! Connection-level commands (AUTH, HELLO, MULTI, WATCH…) are parsed here but executed by the
//! connection, which owns that state.
//!
//! Reads outside a transaction run on a committed snapshot; writes, and every command inside
//! MULTI/EXEC, run in the writer thread against a [`TxnView`] — both through [`KvRead`].

pub mod keys;
pub mod server;
pub mod strings;

use crate::frame::Frame;
use crate::limits::KEY_BYTES_MAX;
use crate::storage::writer::{Abort, TxnView};
use crate::storage::{ScanPage, Snapshot};

/// Reading the data, from either a snapshot or inside a transaction.
pub trait KvRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Abort>;
    fn len(&self) -> Result<u64, Abort>;
    fn scan(&self, after: Option<&[u8]>, count: usize) -> Result<ScanPage, Abort>;
    fn is_empty(&self) -> Result<bool, Abort> {
        Ok(self.len()? == 0)
    }
}

impl KvRead for Snapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
        Ok(Snapshot::get(self, key)?)
    }
    fn len(&self) -> Result<u64, Abort> {
        Ok(Snapshot::len(self)?)
    }
    fn scan(&self, after: Option<&[u8]>, count: usize) -> Result<ScanPage, Abort> {
        Ok(Snapshot::scan(self, after, count)?)
    }
}

impl KvRead for TxnView<'_, '_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
        TxnView::get(self, key)
    }
    fn len(&self) -> Result<u64, Abort> {
        TxnView::len(self)
    }
    fn scan(&self, after: Option<&[u8]>, count: usize) -> Result<ScanPage, Abort> {
        TxnView::scan(self, after, count)
    }
}

/// Static facts about a command, as `COMMAND` reports them and as arity checks use them.
/// `arity` follows Redis: positive is exact (including the name), negative is a minimum.
pub struct Spec {
    pub name: &'static str,
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    first_key: i64,
    last_key: i64,
    step: i64,
) -> Spec {
    Spec { name, arity, flags, first_key, last_key, step }
}

const W: &[&str] = &["write"];
const R: &[&str] = &["readonly", "fast"];
const C: &[&str] = &["fast", "no-auth"];

/// Every command the data port knows. Names are lowercase, as COMMAND reports them.
pub const SPECS: &[Spec] = &[
    spec("append", 3, W, 1, 1, 1),
    spec("auth", -2, C, 0, 0, 0),
    spec("client", -2, C, 0, 0, 0),
    spec("command", -1, C, 0, 0, 0),
    spec("config", -2, C, 0, 0, 0),
    spec("dbsize", 1, R, 0, 0, 0),
    spec("decr", 2, W, 1, 1, 1),
    spec("decrby", 3, W, 1, 1, 1),
    spec("del", -2, W, 1, -1, 1),
    spec("discard", 1, C, 0, 0, 0),
    spec("echo", 2, C, 0, 0, 0),
    spec("exec", 1, C, 0, 0, 0),
    spec("exists", -2, R, 1, -1, 1),
    spec("get", 2, R, 1, 1, 1),
    spec("getdel", 2, W, 1, 1, 1),
    spec("hello", -1, C, 0, 0, 0),
    spec("incr", 2, W, 1, 1, 1),
    spec("incrby", 3, W, 1, 1, 1),
    spec("info", -1, C, 0, 0, 0),
    spec("mget", -2, R, 1, -1, 1),
    spec("mset", -3, W, 1, -1, 2),
    spec("multi", 1, C, 0, 0, 0),
    spec("ping", -1, C, 0, 0, 0),
    spec("quit", -1, C, 0, 0, 0),
    spec("role", 1, C, 0, 0, 0),
    spec("scan", -2, R, 0, 0, 0),
    spec("select", 2, C, 0, 0, 0),
    spec("set", -3, W, 1, 1, 1),
    spec("strlen", 2, R, 1, 1, 1),
    spec("unwatch", 1, C, 0, 0, 0),
    spec("wait", 3, &["noscript"], 0, 0, 0),
    spec("watch", -2, C, 1, -1, 1),
];

pub fn find_spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Condition of a SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    Always,
    IfAbsent,
    IfPresent,
}

/// A parsed command with validated arguments.
#[derive(Debug, Clone)]
pub enum Command {
    // Connection.
    Ping(Option<Vec<u8>>),
    Echo(Vec<u8>),
    Hello { proto: Option<u8>, auth: Option<(Vec<u8>, Vec<u8>)>, setname: Option<Vec<u8>> },
    Auth { user: Option<Vec<u8>>, password: Vec<u8> },
    Select(i64),
    Quit,
    ClientSetName(Vec<u8>),
    ClientGetName,
    ClientId,
    ClientSetInfo,
    // Transactions.
    Multi,
    Exec,
    Discard,
    Watch(Vec<Vec<u8>>),
    Unwatch,
    // Server.
    Info(Vec<String>),
    Role,
    Wait { replicas: usize, timeout_ms: u64 },
    CommandInfo(Vec<String>),
    CommandCount,
    CommandList,
    CommandDocs,
    ConfigGet(Vec<String>),
    DbSize,
    // Reads.
    Get(Vec<u8>),
    MGet(Vec<Vec<u8>>),
    Exists(Vec<Vec<u8>>),
    Strlen(Vec<u8>),
    Scan { cursor: u64, pattern: Option<Vec<u8>>, count: usize },
    // Writes.
    Set { key: Vec<u8>, value: Vec<u8>, condition: SetCondition, get: bool },
    GetDel(Vec<u8>),
    Del(Vec<Vec<u8>>),
    IncrBy { key: Vec<u8>, by: i64 },
    Append { key: Vec<u8>, value: Vec<u8> },
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
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

impl Command {
    pub fn class(&self) -> Class {
        use Command::*;
        match self {
            Get(_) | MGet(_) | Exists(_) | Strlen(_) | Scan { .. } | DbSize => Class::Read,
            Set { .. } | GetDel(_) | Del(_) | IncrBy { .. } | Append { .. } | MSet(_) => Class::Write,
            _ => Class::Connection,
        }
    }

    /// Parses a request. The error is the reply to send (the connection stays open).
    pub fn parse(args: Vec<Vec<u8>>) -> Result<(Command, &'static str), Frame> {
        let mut args = args.into_iter();
        let Some(name_bytes) = args.next() else {
            return Err(Frame::error("ERR empty command"));
        };
        let name = String::from_utf8_lossy(&name_bytes).to_ascii_lowercase();
        let rest: Vec<Vec<u8>> = args.collect();
        let Some(spec) = find_spec(&name) else {
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
            "config" => {
                let sub = a.string()?.to_ascii_lowercase();
                if sub != "get" {
                    return Err(Frame::error(format!(
                        "ERR CONFIG {} is not supported; Strand is configured with strand-engine flags",
                        sub.to_ascii_uppercase()
                    )));
                }
                let patterns = a.strings_rest();
                if patterns.is_empty() {
                    return Err(Frame::error("ERR wrong number of arguments for 'config|get' command"));
                }
                Command::ConfigGet(patterns)
            }
            "dbsize" => Command::DbSize,
            "get" => Command::Get(a.key()?),
            "mget" => Command::MGet(a.keys_rest()?),
            "exists" => Command::Exists(a.keys_rest()?),
            "strlen" => Command::Strlen(a.key()?),
            "scan" => keys::parse_scan(&mut a)?,
            "set" => strings::parse_set(&mut a)?,
            "getdel" => Command::GetDel(a.key()?),
            "del" => Command::Del(a.keys_rest()?),
            "incr" => Command::IncrBy { key: a.key()?, by: 1 },
            "decr" => Command::IncrBy { key: a.key()?, by: -1 },
            "incrby" => Command::IncrBy { key: a.key()?, by: a.integer()? },
            "decrby" => {
                let key = a.key()?;
                let by =
                    a.integer()?.checked_neg().ok_or_else(|| Frame::error("ERR decrement would overflow"))?;
                Command::IncrBy { key, by }
            }
            "append" => Command::Append { key: a.key()?, value: a.next_arg()? },
            "mset" => strings::parse_mset(&mut a)?,
            other => unreachable!("command {other} has a spec but no parser"),
        };
        a.finish()?;
        Ok((command, spec.name))
    }

    /// Executes a read command against `kv`.
    pub fn execute_read(&self, kv: &impl KvRead) -> Result<Frame, Abort> {
        match self {
            Command::Get(key) => Ok(Frame::from_option(kv.get(key)?)),
            Command::MGet(keys) => keys
                .iter()
                .map(|k| kv.get(k).map(Frame::from_option))
                .collect::<Result<_, _>>()
                .map(Frame::Array),
            Command::Exists(keys) => {
                let mut n = 0;
                for key in keys {
                    if kv.get(key)?.is_some() {
                        n += 1;
                    }
                }
                Ok(Frame::Integer(n))
            }
            Command::Strlen(key) => {
                Ok(Frame::Integer(kv.get(key)?.map_or(0, |v| i64::try_from(v.len()).unwrap_or(i64::MAX))))
            }
            Command::DbSize => Ok(Frame::Integer(i64::try_from(kv.len()?).unwrap_or(i64::MAX))),
            other => unreachable!("{other:?} is not a read command"),
        }
    }

    /// Executes a read or write command inside the writer.
    pub fn execute_in_txn(&self, view: &mut TxnView<'_, '_>) -> Result<Frame, Abort> {
        match self.class() {
            Class::Read => self.execute_read(view),
            Class::Write => strings::execute_write(self, view),
            Class::Connection => unreachable!("connection commands never reach the writer"),
        }
    }
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
        let wrong = self.wrong_args();
        self.items.next().ok_or(wrong)
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

    fn finish(&mut self) -> Result<(), Frame> {
        if self.items.len() == 0 { Ok(()) } else { Err(Frame::error("ERR syntax error")) }
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
        "id" => Ok(Command::ClientId),
        "setinfo" => {
            // Client libraries announce themselves; accepted and ignored.
            a.next_arg()?;
            a.next_arg()?;
            Ok(Command::ClientSetInfo)
        }
        other => {
            Err(Frame::error(format!("ERR unknown subcommand '{other}'. Try CLIENT SETNAME, GETNAME, ID.")))
        }
    }
}

fn parse_command(a: &mut Args) -> Result<Command, Frame> {
    let Some(sub) = a.optional() else { return Ok(Command::CommandList) };
    match String::from_utf8_lossy(&sub).to_ascii_lowercase().as_str() {
        "count" => Ok(Command::CommandCount),
        "info" => Ok(Command::CommandInfo(a.strings_rest())),
        "docs" => {
            a.strings_rest();
            Ok(Command::CommandDocs)
        }
        other => {
            Err(Frame::error(format!("ERR unknown subcommand '{other}'. Try COMMAND COUNT, INFO, DOCS.")))
        }
    }
}
