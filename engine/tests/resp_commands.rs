//! Every data-port command through a real Redis client (the `redis` crate) against a real
//! server process, plus transactions, limits and malformed input over raw TCP.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use common::{Server, raw, tempdir};
use redis::{Commands, RedisResult, Value};

fn server() -> (tempfile::TempDir, Server) {
    let dir = tempdir();
    let server = Server::start(&dir.path().join("a"), "Ardmore", &[]);
    (dir, server)
}

#[test]
fn string_commands() {
    let (_dir, server) = server();
    let mut c = server.client();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO").arg("hi").query(&mut c).unwrap();
    assert_eq!(echo, "hi");
    let () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);
    // SET NX / XX / GET
    let nx: Option<String> = redis::cmd("SET").arg("k").arg("x").arg("NX").query(&mut c).unwrap();
    assert_eq!(nx, None);
    let xx: Option<String> = redis::cmd("SET").arg("new").arg("x").arg("XX").query(&mut c).unwrap();
    assert_eq!(xx, None);
    assert!(!c.exists::<_, bool>("new").unwrap());
    let old: Option<String> = redis::cmd("SET").arg("k").arg("v2").arg("GET").query(&mut c).unwrap();
    assert_eq!(old.as_deref(), Some("v"));
    let ok: String = redis::cmd("SET").arg("n").arg("1").arg("NX").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    // GETDEL
    let got: Option<String> = redis::cmd("GETDEL").arg("k").query(&mut c).unwrap();
    assert_eq!(got.as_deref(), Some("v2"));
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);
    // INCR family
    assert_eq!(c.incr::<_, _, i64>("n", 1).unwrap(), 2);
    assert_eq!(redis::cmd("INCR").arg("n").query::<i64>(&mut c).unwrap(), 3);
    assert_eq!(redis::cmd("DECR").arg("n").query::<i64>(&mut c).unwrap(), 2);
    assert_eq!(redis::cmd("INCRBY").arg("n").arg(10).query::<i64>(&mut c).unwrap(), 12);
    assert_eq!(redis::cmd("DECRBY").arg("n").arg(20).query::<i64>(&mut c).unwrap(), -8);
    assert_eq!(redis::cmd("INCR").arg("fresh").query::<i64>(&mut c).unwrap(), 1);
    let () = c.set("big", i64::MAX).unwrap();
    let err = redis::cmd("INCR").arg("big").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
    let () = c.set("text", "abc").unwrap();
    let err = redis::cmd("INCR").arg("text").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    // APPEND, STRLEN
    assert_eq!(c.append::<_, _, i64>("text", "def").unwrap(), 6);
    assert_eq!(c.append::<_, _, i64>("fresh2", "xy").unwrap(), 2);
    assert_eq!(redis::cmd("STRLEN").arg("text").query::<i64>(&mut c).unwrap(), 6);
    assert_eq!(redis::cmd("STRLEN").arg("nothing").query::<i64>(&mut c).unwrap(), 0);
    // MSET, MGET, EXISTS, DEL, DBSIZE
    let () = redis::cmd("MSET").arg("a").arg("1").arg("b").arg("2").query(&mut c).unwrap();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg("a").arg("b").arg("zz").query(&mut c).unwrap();
    assert_eq!(values, vec![Some("1".into()), Some("2".into()), None]);
    assert_eq!(redis::cmd("EXISTS").arg("a").arg("b").arg("a").arg("zz").query::<i64>(&mut c).unwrap(), 3);
    assert_eq!(c.del::<_, i64>(&["a", "zz"]).unwrap(), 1);
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 6, "n fresh big text fresh2 b");
    // binary-safe keys and values
    let key = vec![0u8, 255, b'\r', b'\n'];
    let value = vec![1u8, 0, 2, b'\r', b'\n', 3];
    let () = c.set(&key, &value).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>(&key).unwrap(), value);
    // errors keep the connection usable
    let err = redis::cmd("NOSUCH").arg("x").query::<String>(&mut c).unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
    let err = redis::cmd("GET").query::<String>(&mut c).unwrap_err();
    assert!(err.to_string().contains("wrong number of arguments"), "{err}");
    let err = redis::cmd("SET").arg("k").arg("v").arg("EX").arg(0).query::<String>(&mut c).unwrap_err();
    assert!(err.to_string().contains("invalid expire time in 'set' command"), "{err}");
    let err = redis::cmd("SET").arg("k").arg("v").arg("NX").arg("XX").query::<String>(&mut c).unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
}

#[test]
fn connection_and_server_commands() {
    let (_dir, server) = server();
    let mut c = server.client();
    let () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    let err = redis::cmd("SELECT").arg(1).query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    let () = redis::cmd("CLIENT").arg("SETNAME").arg("tester").query(&mut c).unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, "tester");
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for needle in [
        "# Server",
        "# Clients",
        "# Persistence",
        "# Replication",
        "# Keyspace",
        "role:master",
        "instance_name:Ardmore",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}: {info}");
    }
    let replication: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
    assert!(
        replication.contains("strand_role:standalone") && !replication.contains("# Server"),
        "{replication}"
    );
    let () = c.set("x", "1").unwrap();
    let keyspace: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(keyspace.contains("db0:keys=1"), "{keyspace}");
    let role: Value = redis::cmd("ROLE").query(&mut c).unwrap();
    let Value::Array(items) = role else { panic!("ROLE is an array") };
    assert_eq!(items[0], Value::BulkString(b"master".to_vec()));
    assert_eq!(items[1], Value::Int(1));
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count >= 30);
    let commands: Vec<Value> = redis::cmd("COMMAND").query(&mut c).unwrap();
    assert_eq!(commands.len() as i64, count);
    let info: Vec<Value> = redis::cmd("COMMAND").arg("INFO").arg("get").arg("nope").query(&mut c).unwrap();
    assert_eq!(info.len(), 2);
    assert_eq!(info[1], Value::Nil);
    let config: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("append*").query(&mut c).unwrap();
    assert_eq!(config, vec!["appendonly", "yes", "appendfsync", "always"]);
    let err = redis::cmd("CONFIG").arg("SET").arg("x").arg("y").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("Unknown option or number of arguments for CONFIG SET - 'x'"), "{err}");
    // Redis's encoding parameters are accepted as documented no-ops, and read back.
    let () = redis::cmd("CONFIG").arg("SET").arg("hash-max-listpack-entries").arg("4").query(&mut c).unwrap();
    let config: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("hash-max-listpack-entries").query(&mut c).unwrap();
    assert_eq!(config, vec!["hash-max-listpack-entries", "4"]);
}

#[test]
fn resp3_hello() {
    let (_dir, server) = server();
    let (out, _) = raw(&server.addr(), b"HELLO 3\r\nGET missing\r\nHELLO 2\r\nGET missing\r\nHELLO 4\r\n");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("%8\r\n"), "RESP3 map expected: {text}");
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    assert!(text.contains("_\r\n"), "RESP3 null: {text}");
    assert!(text.contains("*16\r\n"), "RESP2 flattened map: {text}");
    assert!(text.contains("$-1\r\n"), "RESP2 null: {text}");
    assert!(text.ends_with("-NOPROTO unsupported protocol version\r\n"), "{text}");
}

#[test]
fn scan_visits_every_key_once_in_order() {
    let (_dir, server) = server();
    let mut c = server.client();
    let mut pipe = redis::pipe();
    for i in 0..250 {
        pipe.set(format!("user:{i:03}"), i).ignore();
        pipe.set(format!("item:{i:03}"), i).ignore();
    }
    let () = pipe.query(&mut c).unwrap();
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(37)
            .query(&mut c)
            .unwrap();
        seen.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let expected: Vec<String> = (0..250).map(|i| format!("user:{i:03}")).collect();
    assert_eq!(seen, expected);
    // The client library's own iterator works too.
    let all: Vec<String> = c.scan_match("item:1*").unwrap().collect();
    assert_eq!(all.len(), 100);
    let err = redis::cmd("SCAN").arg(987654).query::<Value>(&mut c).unwrap_err();
    assert!(err.to_string().contains("invalid cursor"), "{err}");
    let err = redis::cmd("SCAN").arg(0).arg("COUNT").arg(0).query::<Value>(&mut c).unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");
}

#[test]
fn multi_exec_is_one_transaction_with_one_seqno() {
    let (_dir, server) = server();
    let mut c = server.client();
    let before = server.status()["journal_seqno"].as_u64().unwrap();
    let (a, b, n): (String, String, i64) = redis::pipe()
        .atomic()
        .set("a", "1")
        .set("b", "2")
        .incr("n", 5)
        .get("a")
        .get("b")
        .get("n")
        .query(&mut c)
        .map(|(_, _, _, a, b, n): ((), (), i64, String, String, i64)| (a, b, n))
        .unwrap();
    assert_eq!((a.as_str(), b.as_str(), n), ("1", "2", 5));
    let after = server.status()["journal_seqno"].as_u64().unwrap();
    assert_eq!(after, before + 1, "one EXEC, one journal record");
    let (code, body) =
        common::admin(&server.data_dir, "GET", &format!("/v1/journal?from={after}&to={after}"), None)
            .unwrap();
    assert_eq!(code, 200);
    let records: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(records[0]["changes"].as_array().unwrap().len(), 3, "{body}");
}

#[test]
fn exec_runtime_error_rolls_back_everything() {
    let (_dir, server) = server();
    let mut c = server.client();
    let () = c.set("text", "abc").unwrap();
    let seqno = server.status()["journal_seqno"].as_u64().unwrap();
    let result: RedisResult<Value> =
        redis::pipe().atomic().set("a", "1").incr("text", 1).set("b", "2").query(&mut c);
    assert!(result.is_err(), "the client sees the transaction fail");
    // On the wire the reason is spelled out.
    let (out, _) = raw(&server.addr(), b"MULTI\r\nSET a 1\r\nINCR text\r\nEXEC\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n-EXECABORT Transaction rolled back because of: ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(c.get::<_, Option<String>>("a").unwrap(), None, "nothing of the transaction applied");
    assert_eq!(c.get::<_, Option<String>>("b").unwrap(), None);
    assert_eq!(server.status()["journal_seqno"].as_u64().unwrap(), seqno, "no seqno consumed");
}

#[test]
fn exec_queue_errors_discard_the_transaction() {
    let (_dir, server) = server();
    let (out, _) = raw(
        &server.addr(),
        b"MULTI\r\nSET a 1\r\nGET\r\nEXEC\r\nGET a\r\nEXEC\r\nDISCARD\r\nMULTI\r\nMULTI\r\nDISCARD\r\n",
    );
    let text = String::from_utf8_lossy(&out);
    assert_eq!(
        text,
        "+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n+OK\r\n-ERR MULTI calls can not be nested\r\n+OK\r\n"
    );
}

#[test]
fn watch_aborts_on_concurrent_change_only() {
    let (_dir, server) = server();
    let mut c1 = server.client();
    let mut c2 = server.client();
    let () = c1.set("balance", 100).unwrap();
    // Untouched watched key: EXEC applies.
    let () = redis::cmd("WATCH").arg("balance").query(&mut c1).unwrap();
    let r: Option<(i64,)> = redis::pipe().atomic().incr("balance", -10).query(&mut c1).unwrap();
    assert_eq!(r, Some((90,)));
    // Watched key changed by another client: EXEC returns nil and applies nothing.
    let () = redis::cmd("WATCH").arg("balance").query(&mut c1).unwrap();
    let () = c2.set("balance", 500).unwrap();
    let r: Option<(i64,)> = redis::pipe().atomic().incr("balance", -10).query(&mut c1).unwrap();
    assert_eq!(r, None, "EXEC must abort");
    assert_eq!(c1.get::<_, i64>("balance").unwrap(), 500);
    // UNWATCH forgets.
    let () = redis::cmd("WATCH").arg("balance").query(&mut c1).unwrap();
    let () = c2.set("balance", 7).unwrap();
    let () = redis::cmd("UNWATCH").query(&mut c1).unwrap();
    let r: Option<(i64,)> = redis::pipe().atomic().incr("balance", 1).query(&mut c1).unwrap();
    assert_eq!(r, Some((8,)));
    // The client library's optimistic-locking helper converges under contention.
    let mut handles = Vec::new();
    for _ in 0..4 {
        let url = server.url();
        handles.push(std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            for _ in 0..25 {
                let _: () = redis::transaction(&mut c, &["counter"], |con, pipe| {
                    let v: Option<i64> = con.get("counter")?;
                    pipe.set("counter", v.unwrap_or(0) + 1).ignore().query(con)
                })
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(c1.get::<_, i64>("counter").unwrap(), 100, "no lost update");
}

#[test]
fn pipelined_writes_are_all_durable_and_ordered() {
    let (_dir, mut server) = server();
    let mut c = server.client();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.set("p", i).ignore();
        pipe.incr("ctr", 1).ignore();
    }
    pipe.get("p").get("ctr");
    let (p, ctr): (i64, i64) = pipe.query(&mut c).unwrap();
    assert_eq!((p, ctr), (1999, 2000));
    drop(c);
    server.kill9();
    server.restart();
    let mut c = server.client();
    assert_eq!(c.get::<_, i64>("ctr").unwrap(), 2000);
    assert_eq!(server.status()["journal_seqno"].as_u64().unwrap(), 4000);
    server.verify();
}

#[test]
fn dbsize_in_a_pipeline_of_reads_and_writes_counts_what_came_before_it() {
    let (_dir, server) = server();
    let mut c = server.client();
    let () = c.set("a", 1).unwrap();
    // Reads first share a view without the counts; DBSIZE takes a view with them; a write
    // drops the view, and the DBSIZE after it sees the write.
    let mut pipe = redis::pipe();
    pipe.get("a").cmd("DBSIZE").get("a").cmd("DBSIZE").set("b", 2).ignore().cmd("DBSIZE").del("a").ignore();
    pipe.get("missing").cmd("DBSIZE").cmd("DBSIZE");
    let replies: (i64, i64, i64, i64, i64, Option<i64>, i64, i64) = pipe.query(&mut c).unwrap();
    assert_eq!(replies, (1, 1, 1, 1, 2, None, 1, 1));
    // The count the writer keeps agrees with a walk of the keys.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert_eq!(keys, vec!["b".to_string()]);
}

#[test]
fn limits_give_clear_errors() {
    let (_dir, server) = server();
    let mut c = server.client();
    let big_key = vec![b'k'; strand_engine::limits::KEY_BYTES_MAX + 1];
    let err = c.set::<_, _, ()>(&big_key, "v").unwrap_err();
    assert!(err.to_string().contains("key is too large"), "{err}");
    let value = vec![b'v'; strand_engine::limits::VALUE_BYTES_MAX];
    let () = c.set("max", &value).unwrap();
    let err = c.append::<_, _, i64>("max", "x").unwrap_err();
    assert!(err.to_string().contains("exceeds maximum allowed size"), "{err}");
    assert_eq!(redis::cmd("STRLEN").arg("max").query::<usize>(&mut c).unwrap(), value.len());
    // A bulk string over the limit is a protocol error: the connection is answered and closed.
    let header =
        format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", strand_engine::limits::RESP_BULK_BYTES_MAX + 1);
    let (out, closed) = raw(&server.addr(), header.as_bytes());
    assert_eq!(String::from_utf8_lossy(&out), "-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed);
    // MULTI queue bound.
    let mut req = b"MULTI\r\n".to_vec();
    for _ in 0..=strand_engine::limits::MULTI_COMMANDS_MAX {
        req.extend_from_slice(b"INCR q\r\n");
    }
    req.extend_from_slice(b"EXEC\r\nGET q\r\n");
    let (out, _) = raw(&server.addr(), &req);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("-ERR MULTI queue is full"), "queue limit error missing");
    assert!(
        text.ends_with("-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n"),
        "tail: {}",
        &text[text.len() - 120..]
    );
}

#[test]
fn multi_queue_is_bounded_in_bytes() {
    let (_dir, server) = server();
    let mut c = server.client();
    let value = vec![b'v'; strand_engine::limits::VALUE_BYTES_MAX];
    let per_command = value.len() + 16; // the value plus "SET" and the key
    let fits = strand_engine::limits::MULTI_BYTES_MAX / per_command;
    let () = redis::cmd("MULTI").query(&mut c).unwrap();
    for i in 0..fits {
        let queued: String = redis::cmd("SET").arg(format!("k{i}")).arg(&value).query(&mut c).unwrap();
        assert_eq!(queued, "QUEUED");
    }
    let err = redis::cmd("SET").arg("one-too-many").arg(&value).query::<String>(&mut c).unwrap_err();
    assert!(err.to_string().contains("MULTI queue is full"), "{err}");
    let err = redis::cmd("EXEC").query::<redis::Value>(&mut c).unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::ExecAbortError, "{err}");
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0, "nothing applied");
}

#[test]
fn client_limit_is_enforced_with_a_clear_error() {
    let dir = tempdir();
    let server = Server::start(&dir.path().join("a"), "Ardmore", &["--max-clients", "2"]);
    let _c1 = server.client();
    let _c2 = server.client();
    let (out, closed) = raw(&server.addr(), b"PING\r\n");
    assert_eq!(String::from_utf8_lossy(&out), "-ERR max number of clients reached\r\n");
    assert!(closed);
    drop(_c1);
    // The slot is freed once the server notices the close; a new client then gets in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (out, _) = raw(&server.addr(), b"PING\r\n");
        if out == b"+PONG\r\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
    }
}

#[test]
fn malformed_input_is_refused_and_the_server_survives() {
    let (_dir, server) = server();
    let cases: &[(&[u8], &str)] = &[
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", "-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-2\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$3\r\nGETXX\r\n", "-ERR Protocol error: bulk string not terminated by CRLF\r\n"),
        (b"*99999999\r\n", "-ERR Protocol error: invalid multibulk length (max 65536)\r\n"),
        (b"SET \"unterminated\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"),
    ];
    for (input, expected) in cases {
        let (out, closed) = raw(&server.addr(), input);
        assert_eq!(String::from_utf8_lossy(&out), *expected, "input {:?}", String::from_utf8_lossy(input));
        assert!(closed, "connection must be closed after a protocol error");
    }
    // Random garbage never kills the server.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for _ in 0..200 {
        let mut junk = Vec::new();
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let alphabet = b"*$\r\n0123456789-:+abcGETSET \xff";
            junk.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        use std::io::Write;
        let _ = s.write_all(&junk);
    }
    let mut c = server.client();
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    let metrics = common::admin(&server.data_dir, "GET", "/metrics", None).unwrap().1;
    assert!(metrics.contains("strand_resp_protocol_errors_total"), "{metrics}");
}

#[test]
fn auth_is_required_when_a_password_is_set() {
    let dir = tempdir();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let server = Server::start(&dir.path().join("a"), "Ardmore", &["--password-file", pw.to_str().unwrap()]);
    let (out, _) = raw(&server.addr(), b"GET k\r\nAUTH nope\r\nAUTH s3cret\r\nGET k\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-NOAUTH Authentication required.\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n$-1\r\n"
    );
    let (out, _) = raw(&server.addr(), b"HELLO 3 AUTH default s3cret\r\n");
    assert!(out.starts_with(b"%8"), "{}", String::from_utf8_lossy(&out));
    let url = format!("redis://:s3cret@127.0.0.1:{}/", server.resp_port);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let () = c.set("k", "v").unwrap();
    let wrong = format!("redis://:bad@127.0.0.1:{}/", server.resp_port);
    assert!(redis::Client::open(wrong).unwrap().get_connection().is_err());
}

#[test]
fn quit_and_inline_commands() {
    let (_dir, server) = server();
    let (out, closed) =
        raw(&server.addr(), b"SET greeting \"hello world\"\r\nGET greeting\r\n\r\nQUIT\r\nPING\r\n");
    assert_eq!(String::from_utf8_lossy(&out), "+OK\r\n$11\r\nhello world\r\n+OK\r\n");
    assert!(closed);
}

/// A blocked BRPOPLPUSH touches nothing until it is served, so it does not fail an EXEC
/// watching its destination; the push that serves it does, and the client disconnecting
/// while blocked cancels it without popping anything.
#[test]
fn blocked_pops_touch_nothing_until_served_and_a_departed_client_pops_nothing() {
    use std::io::Read;
    let (_dir, server) = server();
    let mut c = server.client();
    let () = c.set("somekey", "somevalue").unwrap();
    let mut blocked = server.send_raw(&["BRPOPLPUSH", "src", "dst", "0"]);
    server.wait_blocked(1);
    let mut w = server.client();
    let () = redis::cmd("WATCH").arg("dst").query(&mut w).unwrap();
    let got: Option<(String,)> = redis::pipe().atomic().get("somekey").query(&mut w).unwrap();
    assert_eq!(got, Some(("somevalue".to_owned(),)), "the blocked client wrote nothing");
    // The push serves it, in the same group commit.
    let _: i64 = c.lpush("src", "element").unwrap();
    let mut reply = [0u8; 64];
    let n = blocked.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"$7\r\nelement\r\n");
    assert_eq!(c.lrange::<_, Vec<String>>("dst", 0, -1).unwrap(), vec!["element"]);
    // A client that leaves while blocked is cancelled: a later push stays in the list.
    let gone = server.send_raw(&["BLPOP", "work", "0"]);
    server.wait_blocked(1);
    drop(gone);
    server.wait_blocked(0);
    let _: i64 = c.rpush("work", "job").unwrap();
    assert_eq!(c.lrange::<_, Vec<String>>("work", 0, -1).unwrap(), vec!["job"]);
}

/// Cases a review found: a list rotated onto itself keeps its key and expiry; ZADD with a
/// member twice on a new key applies NX/GT/CH per pair; SMOVE from a missing source is 0
/// whatever the destination; blocked clients are served in the order they blocked even
/// after a transaction touched (and emptied) a key one of them waits on.
#[test]
fn review_cases_of_the_data_model() {
    use std::io::Read;
    let (_dir, server) = server();
    let mut c = server.client();
    let _: i64 = c.rpush("k", "a").unwrap();
    let _: i64 = redis::cmd("PEXPIRE").arg("k").arg(100_000).query(&mut c).unwrap();
    let v: String = redis::cmd("LMOVE").arg("k").arg("k").arg("LEFT").arg("RIGHT").query(&mut c).unwrap();
    assert_eq!(v, "a");
    assert!(redis::cmd("PTTL").arg("k").query::<i64>(&mut c).unwrap() > 0, "the rotation kept the expiry");

    let _: i64 =
        redis::cmd("ZADD").arg("z1").arg("NX").arg(1).arg("a").arg(2).arg("a").query(&mut c).unwrap();
    assert_eq!(c.zscore::<_, _, f64>("z1", "a").unwrap(), 1.0);
    let _: i64 =
        redis::cmd("ZADD").arg("z2").arg("GT").arg(5).arg("a").arg(1).arg("a").query(&mut c).unwrap();
    assert_eq!(c.zscore::<_, _, f64>("z2", "a").unwrap(), 5.0);
    let ch: i64 =
        redis::cmd("ZADD").arg("z3").arg("CH").arg(1).arg("a").arg(2).arg("a").query(&mut c).unwrap();
    assert_eq!(ch, 2, "added, then changed: CH counts both, as Redis");

    let () = c.set("str", "x").unwrap();
    assert_eq!(redis::cmd("SMOVE").arg("nosrc").arg("str").arg("m").query::<i64>(&mut c).unwrap(), 0);

    let mut w1 = server.send_raw(&["BLPOP", "b", "0"]);
    server.wait_blocked(1);
    let mut w2 = server.send_raw(&["BLPOP", "a", "b", "0"]);
    server.wait_blocked(2);
    let () = redis::pipe().atomic().lpush("a", "x").lpop("a", None).ignore().ignore().query(&mut c).unwrap();
    let _: i64 = c.lpush("b", "v").unwrap();
    let mut reply = [0u8; 64];
    let n = w1.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"*2\r\n$1\r\nb\r\n$1\r\nv\r\n", "the older waiter is served first");
    let _: i64 = c.lpush("b", "w").unwrap();
    let n = w2.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"*2\r\n$1\r\nb\r\n$1\r\nw\r\n");

    // A waiter on two keys, one of which becomes a string while it waits, is served from
    // the other (as Redis serves the key that became ready), not answered WRONGTYPE.
    let mut w3 = server.send_raw(&["BLPOP", "p", "q", "0"]);
    server.wait_blocked(1);
    let () = c.set("p", "now a string").unwrap();
    let _: i64 = c.rpush("q", "job").unwrap();
    let n = w3.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"*2\r\n$1\r\nq\r\n$3\r\njob\r\n");
    let mut w4 = server.send_raw(&["BZMPOP", "0", "2", "zp", "zq", "MIN"]);
    server.wait_blocked(1);
    let () = c.set("zp", "x").unwrap();
    let _: i64 = c.zadd("zq", "m", 1).unwrap();
    let n = w4.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"*2\r\n$2\r\nzq\r\n*1\r\n*2\r\n$1\r\nm\r\n$1\r\n1\r\n");
}

/// A command whose journal record would pass `--max-txn-image-bytes` is refused with nothing
/// changed; deleting the same collection, however large, is one small transaction.
#[test]
fn a_transaction_past_the_image_bound_is_refused_whole() {
    let dir = tempdir();
    let refused = common::run_fails(&dir.path().join("b"), &["--max-txn-image-bytes", "1048576"]);
    assert!(refused.contains("at least 33554432"), "{refused}");
    let server = Server::start(&dir.path().join("a"), "Ardmore", &["--max-txn-image-bytes", "33554432"]);
    let mut c = server.client();
    let value = "x".repeat(1024 * 1024);
    for i in 0..40 {
        let _: i64 = c.hset("big", format!("f{i}"), &value).unwrap();
    }
    let seqno = server.seqno();
    let err = redis::cmd("RENAME").arg("big").arg("moved").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("--max-txn-image-bytes"), "{err}");
    let err = redis::cmd("COPY").arg("big").arg("copy").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert_eq!(server.seqno(), seqno, "nothing was journaled");
    assert_eq!(c.hlen::<_, i64>("big").unwrap(), 40);
    assert_eq!(c.exists::<_, i64>(&["moved", "copy"]).unwrap(), 0);
    let _: i64 = c.del("big").unwrap();
    assert_eq!(c.exists::<_, i64>("big").unwrap(), 0);
    server.verify();
}

/// BITOP and BITFIELD as Redis answers them (Redis's own unit/bitfield and unit/bitops run
/// by hand; docs/compatibility.md).
#[test]
fn bitop_and_bitfield() {
    let (_dir, server) = server();
    let mut c = server.client();
    let () = c.set("a", "foobar").unwrap();
    let () = c.set("b", "abcdef").unwrap();
    let n: i64 =
        redis::cmd("BITOP").arg("AND").arg("dest").arg("a").arg("b").arg("missing").query(&mut c).unwrap();
    assert_eq!(n, 6);
    assert_eq!(c.get::<_, Vec<u8>>("dest").unwrap(), vec![0; 6], "a missing key is zeros");
    let _: i64 = redis::cmd("BITOP").arg("XOR").arg("dest").arg("a").arg("b").query(&mut c).unwrap();
    let want: Vec<u8> = b"foobar".iter().zip(b"abcdef").map(|(x, y)| x ^ y).collect();
    assert_eq!(c.get::<_, Vec<u8>>("dest").unwrap(), want);
    let err = redis::cmd("BITOP").arg("NOT").arg("dest").arg("a").arg("b").query::<i64>(&mut c).unwrap_err();
    assert!(err.to_string().contains("single source key"), "{err}");
    let n: i64 = redis::cmd("BITOP").arg("OR").arg("dest").arg("none1").arg("none2").query(&mut c).unwrap();
    assert_eq!((n, c.exists::<_, bool>("dest").unwrap()), (0, false), "an empty result deletes destkey");

    let r: Vec<Option<i64>> = redis::cmd("BITFIELD")
        .arg("bf")
        .arg("SET")
        .arg("u8")
        .arg("#1")
        .arg(250)
        .arg("INCRBY")
        .arg("u8")
        .arg("#1")
        .arg(10)
        .arg("OVERFLOW")
        .arg("SAT")
        .arg("INCRBY")
        .arg("u8")
        .arg("#1")
        .arg(300)
        .arg("OVERFLOW")
        .arg("FAIL")
        .arg("INCRBY")
        .arg("i4")
        .arg(0)
        .arg(8)
        .arg("GET")
        .arg("i16")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, vec![Some(0), Some(4), Some(255), None, Some(255)]);
    assert_eq!(c.strlen::<_, i64>("bf").unwrap(), 2, "the string grew to hold field #1");
    let r: Vec<i64> = redis::cmd("BITFIELD_RO").arg("bf").arg("GET").arg("u8").arg(8).query(&mut c).unwrap();
    assert_eq!(r, vec![255]);
    let err = redis::cmd("BITFIELD_RO")
        .arg("bf")
        .arg("SET")
        .arg("u8")
        .arg(0)
        .arg(1)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("only supports the GET subcommand"), "{err}");
    let err = redis::cmd("BITFIELD").arg("bf").arg("GET").arg("u64").arg(0).query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("u64 is not supported"), "{err}");
    server.verify();
}

/// Every command is counted by name, on every connection, including repeats of a name the
/// connection has counted before.
#[test]
fn commands_are_counted_by_name() {
    let (_dir, server) = server();
    let (mut a, mut b) = (server.client(), server.client());
    for c in [&mut a, &mut b] {
        let () = redis::cmd("SET").arg("k").arg("v").query(c).unwrap();
        for _ in 0..3 {
            let _: Option<String> = redis::cmd("GET").arg("k").query(c).unwrap();
        }
    }
    let mut p = redis::pipe();
    for _ in 0..10 {
        p.cmd("GET").arg("k");
    }
    let _: Vec<Option<String>> = p.query(&mut a).unwrap();
    assert_eq!(server.metric("strand_resp_commands_total{command=\"get\"}"), 16.0);
    assert_eq!(server.metric("strand_resp_commands_total{command=\"set\"}"), 2.0);
}

/// Every write lands once and in its connection's order, whether its group was led by its
/// connection's own task (the writer thread idle) or formed by the writer thread from the
/// queue: one connection alone (its groups led), then nine at once, each appending its own
/// numbers to its own list in chunks of 1 to 13 commands, keeping two chunks unanswered.
#[test]
fn a_connections_writes_commit_in_order_whether_led_or_queued() {
    use std::io::{BufRead, Write};
    let (_dir, server) = server();
    // Sends `n` RPUSHes in chunks of 1 to 13 commands, each chunk written as soon as the
    // one two before it is answered: two batches of one connection in flight at a time.
    let append = |addr: &str, key: &str, n: u64| {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket.set_nodelay(true).unwrap();
        let reader = std::io::BufReader::new(socket.try_clone().unwrap());
        let (answered, replies) = std::sync::mpsc::channel();
        let read = std::thread::spawn(move || {
            for line in reader.lines().take(n as usize) {
                let line = line.unwrap();
                assert!(line.starts_with(':'), "{line}");
                answered.send(()).unwrap();
            }
        });
        let (mut i, mut got, mut ends) = (0, 0, std::collections::VecDeque::new());
        while i < n {
            if ends.len() == 2 {
                let before: u64 = ends.pop_front().unwrap();
                while got < before {
                    replies.recv().unwrap();
                    got += 1;
                }
            }
            let end = n.min(i + 1 + i % 13);
            let mut chunk = Vec::new();
            for v in i..end {
                let v = v.to_string();
                write!(chunk, "*3\r\n$5\r\nRPUSH\r\n${}\r\n{key}\r\n${}\r\n{v}\r\n", key.len(), v.len())
                    .unwrap();
            }
            socket.write_all(&chunk).unwrap();
            ends.push_back(end);
            i = end;
        }
        read.join().unwrap();
    };
    append(&server.addr(), "alone", 300);
    let led = server.metric("strand_commit_groups_led_total") as u64;
    assert!(led > 0, "one connection alone never led its own group");

    let (groups_before, led_before) = (server.metric("strand_group_commit_transactions_count") as u64, led);
    let threads: Vec<_> = (0..9)
        .map(|t| {
            let addr = server.addr();
            std::thread::spawn(move || append(&addr, &format!("list{t}"), 3000))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = server.client();
    let check = |c: &mut redis::Connection, key: &str, n: u64| {
        let got: Vec<u64> = c.lrange(key, 0, -1).unwrap();
        assert!(got.iter().copied().eq(0..n), "{key} is out of order: {got:?}");
    };
    check(&mut c, "alone", 300);
    for t in 0..9 {
        check(&mut c, &format!("list{t}"), 3000);
    }
    let groups = (server.metric("strand_group_commit_transactions_count") as u64) - groups_before;
    let led = (server.metric("strand_commit_groups_led_total") as u64) - led_before;
    assert!(
        groups > led,
        "nine connections at once: no group formed by the writer thread ({groups} groups, {led} led)"
    );
    println!("nine connections at once: {groups} groups, {led} led by a connection's task");
    server.verify();
}
