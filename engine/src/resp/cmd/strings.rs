//! String commands that change data: SET, GETDEL, INCRBY (INCR/DECR/DECRBY), APPEND, MSET,
//! and DEL. Each runs inside the writer, so it sees every earlier transaction.

use super::{Args, Command, SetCondition, check_key, parse_integer};
use crate::frame::Frame;
use crate::limits::VALUE_BYTES_MAX;
use crate::storage::writer::{Abort, TxnView};

pub fn parse_set(a: &mut Args) -> Result<Command, Frame> {
    let key = a.key()?;
    let value = a.next_arg()?;
    let (mut condition, mut get) = (SetCondition::Always, false);
    while let Some(option) = a.optional() {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" if condition == SetCondition::Always => condition = SetCondition::IfAbsent,
            b"XX" if condition == SetCondition::Always => condition = SetCondition::IfPresent,
            b"GET" => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                return Err(Frame::error("ERR expiry is not supported: Strand keys do not expire"));
            }
            _ => return Err(Frame::error("ERR syntax error")),
        }
    }
    Ok(Command::Set { key, value, condition, get })
}

pub fn parse_mset(a: &mut Args) -> Result<Command, Frame> {
    let mut pairs = Vec::new();
    while !a.is_empty() {
        let key = check_key(a.next_arg()?)?;
        let Some(value) = a.optional() else {
            return Err(Frame::error("ERR wrong number of arguments for 'mset' command"));
        };
        pairs.push((key, value));
    }
    Ok(Command::MSet(pairs))
}

pub fn execute_write(command: &Command, view: &mut TxnView<'_, '_>) -> Result<Frame, Abort> {
    match command {
        Command::Set { key, value, condition, get } => {
            let old = view.get(key)?;
            let allowed = match condition {
                SetCondition::Always => true,
                SetCondition::IfAbsent => old.is_none(),
                SetCondition::IfPresent => old.is_some(),
            };
            if allowed {
                view.set(key, value)?;
            }
            Ok(match (get, allowed) {
                (true, _) => Frame::from_option(old),
                (false, true) => Frame::ok(),
                (false, false) => Frame::Null,
            })
        }
        Command::GetDel(key) => {
            let old = view.get(key)?;
            if old.is_some() {
                view.delete(key)?;
            }
            Ok(Frame::from_option(old))
        }
        Command::Del(keys) => {
            let mut n = 0;
            for key in keys {
                if view.delete(key)? {
                    n += 1;
                }
            }
            Ok(Frame::Integer(n))
        }
        Command::IncrBy { key, by } => {
            let current = match view.get(key)? {
                None => 0,
                Some(bytes) => parse_integer(&bytes)
                    .ok_or_else(|| Abort::Command("ERR value is not an integer or out of range".into()))?,
            };
            let next = current
                .checked_add(*by)
                .ok_or_else(|| Abort::Command("ERR increment or decrement would overflow".into()))?;
            view.set(key, next.to_string().as_bytes())?;
            Ok(Frame::Integer(next))
        }
        Command::Append { key, value } => {
            let mut current = view.get(key)?.unwrap_or_default();
            if current.len() + value.len() > VALUE_BYTES_MAX {
                return Err(Abort::Command(format!(
                    "ERR string exceeds maximum allowed size ({VALUE_BYTES_MAX} bytes)"
                )));
            }
            current.extend_from_slice(value);
            view.set(key, &current)?;
            Ok(Frame::Integer(i64::try_from(current.len()).unwrap_or(i64::MAX)))
        }
        Command::MSet(pairs) => {
            for (key, value) in pairs {
                view.set(key, value)?;
            }
            Ok(Frame::ok())
        }
        other => unreachable!("{other:?} is not a write command"),
    }
}
