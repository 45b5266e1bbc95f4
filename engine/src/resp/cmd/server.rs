//! Introspection commands: INFO, ROLE, COMMAND and CONFIG GET.

use super::{Args, Command, Spec, find_spec, specs};
use crate::engine::Engine;
use crate::frame::Frame;
use crate::storage::meta::Role;

/// The Redis version we report, for clients that gate features on it. RESP3 and the commands
/// we implement match Redis 7.
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";

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
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nstrand_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:{}\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\ninstance_name:{}\r\ncreation_id:{}\r\nformat_version:{}\r\n\r\n",
            crate::VERSION,
            std::env::consts::OS,
            usize::BITS,
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
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\r\n",
            engine.metrics.connected_clients.get(),
            engine.config.max_clients,
            engine.writer.blocked()
        ));
    }
    if wanted("memory") {
        out.push_str(&format!(
            "# Memory\r\nused_memory:{}\r\nmem_allocator:jemalloc-5.3.0\r\n\r\n",
            resident_bytes()
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
        let counts = engine.store.key_counts();
        if counts.keys > 0 {
            out.push_str(&format!("db0:keys={},expires={},avg_ttl=0\r\n", counts.keys, counts.expiring));
        }
    }
    Frame::Bulk(out.into_bytes())
}

/// The process's resident memory (from /proc; 0 where that is unavailable).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
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
        Frame::Array(spec.flags.iter().map(|f| Frame::Simple((*f).into())).collect()),
        Frame::Integer(spec.first_key),
        Frame::Integer(spec.last_key),
        Frame::Integer(spec.step),
    ])
}

pub fn command_list() -> Frame {
    Frame::Array(specs().map(spec_frame).collect())
}

pub fn command_count() -> Frame {
    Frame::Integer(i64::try_from(specs().count()).unwrap_or(i64::MAX))
}

pub fn command_info(names: &[String]) -> Frame {
    Frame::Array(
        names
            .iter()
            .map(|n| find_spec(&n.to_ascii_lowercase()).map_or(Frame::NullArray, spec_frame))
            .collect(),
    )
}

/// Redis's encoding-tuning parameters. Strand's storage has no such encodings (every type is
/// journaled nodes), so CONFIG SET accepts them and CONFIG GET shows what was set, with no
/// effect on the engine: Redis's own test suite sets them before every type test.
const ENCODING_PARAMS: &[(&str, &str)] = &[
    ("hash-max-listpack-entries", "128"),
    ("hash-max-listpack-value", "64"),
    ("hash-max-ziplist-entries", "128"),
    ("hash-max-ziplist-value", "64"),
    ("list-max-listpack-size", "-2"),
    ("list-max-ziplist-size", "-2"),
    ("list-compress-depth", "0"),
    ("set-max-intset-entries", "512"),
    ("zset-max-listpack-entries", "128"),
    ("zset-max-listpack-value", "64"),
    ("zset-max-ziplist-entries", "128"),
    ("zset-max-ziplist-value", "64"),
    ("stream-node-max-bytes", "4096"),
    ("stream-node-max-entries", "100"),
    ("active-expire-effort", "1"),
    ("lazyfree-lazy-user-del", "no"),
    ("lazyfree-lazy-user-flush", "no"),
    // RESTORE always checks a payload whole (checksum and structure), whatever this says.
    ("sanitize-dump-payload", "no"),
];

/// Parameters whose value is a fact about Strand: CONFIG SET accepts exactly that value
/// (what a test suite or tool sets to get Strand's behaviour) and refuses any other.
const FIXED_PARAMS: &[(&str, &str, &str)] = &[
    ("appendonly", "yes", "every write is journaled and synced before it is acknowledged"),
    ("appendfsync", "always", "every group commit is synced before it is acknowledged"),
    ("save", "", "Strand takes no RDB snapshots; the journal is the durable record"),
];

/// The no-op parameters' values as CONFIG SET left them (process-wide, like Redis's).
static ENCODING_VALUES: std::sync::LazyLock<std::sync::Mutex<std::collections::BTreeMap<String, String>>> =
    std::sync::LazyLock::new(|| {
        std::sync::Mutex::new(
            ENCODING_PARAMS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        )
    });

pub fn parse_config(a: &mut Args) -> Result<Command, Frame> {
    let sub = a.string()?.to_ascii_lowercase();
    match sub.as_str() {
        "get" => {
            let patterns = a.strings_rest();
            if patterns.is_empty() {
                return Err(Frame::error("ERR wrong number of arguments for 'config|get' command"));
            }
            Ok(Command::ConfigGet(patterns))
        }
        "set" => {
            let rest = a.rest();
            if rest.is_empty() || !rest.len().is_multiple_of(2) {
                return Err(Frame::error("ERR wrong number of arguments for 'config|set' command"));
            }
            Ok(Command::ConfigSet(
                super::pair_up(rest)
                    .into_iter()
                    .map(|(k, v)| (String::from_utf8_lossy(&k).to_ascii_lowercase(), v))
                    .collect(),
            ))
        }
        "resetstat" => Ok(Command::ConfigResetStat),
        other => Err(Frame::error(format!(
            "ERR CONFIG {} is not supported; Strand is configured with strand-engine flags",
            other.to_ascii_uppercase()
        ))),
    }
}

/// CONFIG SET: only the documented no-op encoding parameters; anything else gets Redis's
/// error (Strand is configured with strand-engine flags).
pub fn config_set(pairs: &[(String, Vec<u8>)]) -> Frame {
    for (name, value) in pairs {
        if let Some((_, fixed, why)) = FIXED_PARAMS.iter().find(|(k, _, _)| k == name) {
            if value.as_slice() != fixed.as_bytes() {
                return Frame::error(format!("ERR {name} is always \"{fixed}\" in Strand: {why}"));
            }
            continue;
        }
        if !ENCODING_PARAMS.iter().any(|(k, _)| k == name) {
            return Frame::error(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            ));
        }
    }
    let mut values = ENCODING_VALUES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (name, value) in pairs {
        if ENCODING_PARAMS.iter().any(|(k, _)| k == name) {
            values.insert(name.clone(), String::from_utf8_lossy(value).into_owned());
        }
    }
    Frame::ok()
}

/// CONFIG GET: the parameters tools ask for, answered truthfully for Strand, and the no-op
/// encoding parameters.
pub fn config_get(engine: &Engine, patterns: &[String]) -> Frame {
    let params: [(&str, String); 5] = [
        ("appendonly", "yes".into()),
        ("appendfsync", "always".into()),
        ("save", String::new()),
        ("databases", "1".into()),
        ("maxclients", engine.config.max_clients.to_string()),
    ];
    let encodings: Vec<(String, String)> = ENCODING_VALUES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let params: Vec<(&str, String)> =
        params.into_iter().chain(encodings.iter().map(|(k, v)| (k.as_str(), v.clone()))).collect();
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
