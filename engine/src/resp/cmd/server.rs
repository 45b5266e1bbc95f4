//! Introspection commands: INFO, ROLE, COMMAND and CONFIG GET.

use super::{SPECS, Spec, find_spec};
use crate::engine::Engine;
use crate::frame::Frame;
use crate::storage::meta::Role;

/// The Redis version we report, for clients that gate features on it. RESP3 and the commands
/// we implement match Redis 7.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

pub fn info(engine: &Engine, sections: &[String]) -> Frame {
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                let s = s.to_ascii_lowercase();
                s == name || s == "all" || s == "everything" || s == "default"
            })
    };
    let store = &engine.store;
    let meta = store.meta();
    let seqno = store.committed_seqno();
    let mut out = String::new();
    if wanted("server") {
        out.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nstrand_version:{}\r\nredis_mode:standalone\r\nos:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\ninstance_name:{}\r\ncreation_id:{}\r\nformat_version:{}\r\n\r\n",
            crate::VERSION,
            std::env::consts::OS,
            std::process::id(),
            engine.config.resp_port,
            engine.started.elapsed().as_secs(),
            meta.name,
            meta.creation_id,
            meta.format_version,
        ));
    }
    if wanted("clients") {
        out.push_str(&format!(
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            engine.metrics.connected_clients.get(),
            engine.config.max_clients
        ));
    }
    if wanted("persistence") {
        out.push_str(&format!(
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nstrand_durability:fsync-per-group-commit\r\njournal_seqno:{seqno}\r\nstorage_bytes:{}\r\nstorage_free_bytes:{}\r\ndisk_reserve_bytes:{}\r\nstorage_degraded:{}\r\n\r\n",
            store.file_bytes(),
            store.free_bytes().unwrap_or(0),
            engine.config.disk_reserve_bytes,
            u8::from(store.is_degraded()),
        ));
    }
    if wanted("replication") {
        let redis_role = match meta.role {
            Role::Secondary => "slave",
            _ => "master",
        };
        out.push_str(&format!(
            "# Replication\r\nrole:{redis_role}\r\nstrand_role:{}\r\nsupplementary:{}\r\nmaster_repl_offset:{seqno}\r\n",
            meta.role.as_str(),
            u8::from(meta.supplementary),
        ));
        let sources = engine.replication.source_statuses();
        let streaming = sources.iter().filter(|s| s.state == "streaming").count();
        out.push_str(&format!("connected_slaves:{streaming}\r\n"));
        for (i, s) in sources.iter().enumerate() {
            out.push_str(&format!(
                "slave{i}:name={},addr={},state={},offset={},lag_seqnos={}\r\n",
                s.receiver,
                s.addr,
                s.state,
                s.acked_seqno,
                seqno.saturating_sub(s.acked_seqno)
            ));
        }
        if meta.role == Role::Secondary {
            let r = engine.replication.receiver_status();
            out.push_str(&format!(
                "master_name:{}\r\nmaster_link_status:{}\r\n",
                r.source.unwrap_or_default(),
                if r.state == "streaming" { "up" } else { "down" }
            ));
        }
        out.push_str("\r\n");
    }
    if wanted("keyspace") {
        out.push_str("# Keyspace\r\n");
        if let Ok(keys) = engine.store.snapshot().and_then(|s| s.len())
            && keys > 0
        {
            out.push_str(&format!("db0:keys={keys},expires=0,avg_ttl=0\r\n"));
        }
    }
    Frame::Bulk(out.into_bytes())
}

pub fn role(engine: &Engine) -> Frame {
    let seqno = i64::try_from(engine.store.committed_seqno()).unwrap_or(i64::MAX);
    if engine.store.role() == Role::Secondary {
        let receiver = engine.replication.receiver_status();
        let state = if receiver.state == "streaming" { "connected" } else { "connect" };
        return Frame::Array(vec![
            Frame::bulk("slave"),
            Frame::bulk(receiver.source.unwrap_or_default()),
            Frame::Integer(0),
            Frame::bulk(state),
            Frame::Integer(seqno),
        ]);
    }
    let replicas = engine
        .replication
        .source_statuses()
        .into_iter()
        .map(|s| {
            let (host, port) = s.addr.rsplit_once(':').unwrap_or((s.addr.as_str(), "0"));
            Frame::Array(vec![Frame::bulk(host), Frame::bulk(port), Frame::bulk(s.acked_seqno.to_string())])
        })
        .collect();
    Frame::Array(vec![Frame::bulk("master"), Frame::Integer(seqno), Frame::Array(replicas)])
}

fn spec_frame(spec: &Spec) -> Frame {
    Frame::Array(vec![
        Frame::bulk(spec.name),
        Frame::Integer(spec.arity),
        Frame::Array(spec.flags.iter().map(|f| Frame::Simple((*f).to_owned())).collect()),
        Frame::Integer(spec.first_key),
        Frame::Integer(spec.last_key),
        Frame::Integer(spec.step),
    ])
}

pub fn command_list() -> Frame {
    Frame::Array(SPECS.iter().map(spec_frame).collect())
}

pub fn command_count() -> Frame {
    Frame::Integer(i64::try_from(SPECS.len()).unwrap_or(i64::MAX))
}

pub fn command_info(names: &[String]) -> Frame {
    Frame::Array(
        names
            .iter()
            .map(|n| find_spec(&n.to_ascii_lowercase()).map_or(Frame::NullArray, spec_frame))
            .collect(),
    )
}

/// CONFIG GET: the few parameters tools ask for, answered truthfully for Strand.
pub fn config_get(engine: &Engine, patterns: &[String]) -> Frame {
    let params: [(&str, String); 5] = [
        ("appendonly", "yes".into()),
        ("appendfsync", "always".into()),
        ("save", String::new()),
        ("databases", "1".into()),
        ("maxclients", engine.config.max_clients.to_string()),
    ];
    let mut pairs = Vec::new();
    for (name, value) in &params {
        if patterns
            .iter()
            .any(|p| super::keys::glob_match(p.to_ascii_lowercase().as_bytes(), name.as_bytes()))
        {
            pairs.push((Frame::bulk(*name), Frame::bulk(value.as_bytes())));
        }
    }
    Frame::Map(pairs)
}
