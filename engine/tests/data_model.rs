//! The Redis data model through replication and rollback, between real engine processes:
//! every type replicates node for node, an online rollback of mixed-type transactions
//! (expiries and a blocking-pop consumer included) restores every key exactly, TTLs
//! included, and puts what it rolled off into the unreplicated-transaction log in
//! application terms; a secondary hides an expired key but never expires it itself; SI
//! streams carry collection changes with their stream tags.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use common::{Server, tempdir, wait_until};
use redis::Commands;

/// Every key with its type, its absolute expiry (ms, -1 none) and its whole value in a
/// comparable text form.
fn dump(server: &Server) -> BTreeMap<String, (String, i64, String)> {
    let mut c = server.client();
    let keys: Vec<String> = c.scan().unwrap().collect();
    let mut out = BTreeMap::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE").arg(&k).query(&mut c).unwrap();
        let expiry: i64 = redis::cmd("PEXPIRETIME").arg(&k).query(&mut c).unwrap();
        let value = match kind.as_str() {
            "string" => c.get::<_, String>(&k).unwrap(),
            "hash" => format!("{:?}", c.hgetall::<_, BTreeMap<String, String>>(&k).unwrap()),
            "set" => {
                let mut m: Vec<String> = c.smembers(&k).unwrap();
                m.sort();
                format!("{m:?}")
            }
            "zset" => {
                // The whole set, and what its rank index answers: a middle range, a rank, counts.
                let all: Vec<(String, String)> = c.zrange_withscores(&k, 0, -1).unwrap();
                let middle: Vec<String> = c.zrange(&k, 100, 104).unwrap();
                let last = all.last().map(|(m, _)| m.clone()).unwrap_or_default();
                let rank: Option<i64> = redis::cmd("ZRANK").arg(&k).arg(&last).query(&mut c).unwrap();
                let low: i64 = c.zcount(&k, "-inf", "(50").unwrap();
                format!("{all:?} {middle:?} {rank:?} {low}")
            }
            "list" => format!("{:?}", c.lrange::<_, Vec<String>>(&k, 0, -1).unwrap()),
            other => panic!("unexpected type {other} of {k}"),
        };
        out.insert(k, (kind, expiry, value));
    }
    out
}

/// DBSIZE (the store's running count) and INFO's `expires` agree with the keys a scan finds.
#[track_caller]
fn counts_agree(server: &Server) {
    let mut c = server.client();
    let keys: Vec<String> = c.scan().unwrap().collect();
    let size: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, keys.len(), "DBSIZE on {}", server.name);
    let mut expiring = 0;
    for k in &keys {
        if redis::cmd("PTTL").arg(k).query::<i64>(&mut c).unwrap() > 0 {
            expiring += 1;
        }
    }
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    let expected =
        if keys.is_empty() { String::new() } else { format!("db0:keys={},expires={expiring},", keys.len()) };
    assert!(info.contains(&expected), "{info} on {}", server.name);
}

/// A mixed data set: every type, some keys with an expiry.
fn seed(server: &Server) {
    let mut c = server.client();
    let () = c.set("s:plain", "v").unwrap();
    let () = redis::cmd("SET").arg("s:ttl").arg("t").arg("EX").arg(3600).query(&mut c).unwrap();
    let () = c.hset_multiple("h:user", &[("name", "ann"), ("city", "Oslo"), ("age", "41")]).unwrap();
    let () = redis::cmd("EXPIRE").arg("h:user").arg(7200).query(&mut c).unwrap();
    let _: i64 = c.sadd("set:tags", &["red", "green", "blue"]).unwrap();
    let _: i64 = c.zadd_multiple("z:board", &[(10.5, "ann"), (3.0, "bob"), (7.0, "cy")]).unwrap();
    let _: i64 = c.rpush("l:queue", &["j1", "j2", "j3", "j4"]).unwrap();
    let _: i64 = c.rpush("l:jobs", &["a"]).unwrap();
    // A sorted set large enough to keep a rank index (resp::cmd::zindex).
    let board: Vec<(f64, String)> = (0..600).map(|i| (f64::from(i % 97), format!("p{i}"))).collect();
    let _: i64 = c.zadd_multiple("z:big", &board).unwrap();
    // One transaction touching every type.
    let () = redis::pipe()
        .atomic()
        .hset("h:user", "email", "ann@example.org")
        .sadd("set:tags", "cyan")
        .zincr("z:board", "bob", 5)
        .lpush("l:queue", "j0")
        .set("s:counter", 1)
        .query(&mut c)
        .unwrap();
}

/// Changes of every kind: field and member updates, removals, score changes, pops and
/// pushes, middle-of-list edits, expiries set, cleared and reached, a rename, a deleted
/// collection, and a client blocked in BLPOP served by a push.
fn churn(server: &Server) {
    let mut c = server.client();
    let _: i64 = c.hset("h:user", "city", "Bergen").unwrap();
    let _: i64 = c.hdel("h:user", "age").unwrap();
    let _: i64 = c.srem("set:tags", "red").unwrap();
    let _: i64 = c.zadd("z:board", "cy", 99.0).unwrap();
    let _: i64 = c.zrem("z:board", "ann").unwrap();
    let _: i64 = redis::cmd("ZREMRANGEBYRANK").arg("z:big").arg(0).arg(199).query(&mut c).unwrap();
    let _: f64 = c.zincr("z:big", "p599", 1000).unwrap();
    let _: i64 = c.zadd_multiple("z:big", &[(-1.0, "n1"), (42.5, "n2")]).unwrap();
    let _: Option<String> = redis::cmd("LPOP").arg("l:queue").query(&mut c).unwrap();
    let () = redis::cmd("LSET").arg("l:queue").arg(1).arg("J2").query(&mut c).unwrap();
    let _: i64 = redis::cmd("LINSERT").arg("l:queue").arg("BEFORE").arg("j3").arg("x").query(&mut c).unwrap();
    let _: i64 = redis::cmd("LREM").arg("l:queue").arg(0).arg("j4").query(&mut c).unwrap();
    let _: i64 = redis::cmd("PERSIST").arg("s:ttl").query(&mut c).unwrap();
    let _: i64 = redis::cmd("PEXPIRE").arg("s:plain").arg(500_000).query(&mut c).unwrap();
    let () = redis::cmd("RENAME").arg("set:tags").arg("set:colours").query(&mut c).unwrap();
    let _: i64 = c.del("h:user").unwrap();
    let _: i64 = c.incr("s:counter", 41).unwrap();
    // A key that expires and is removed by the primary's expiry cycle (a journaled DEL).
    // The seqno is read before the SET: the removal may come before a read after it.
    let before = server.seqno();
    let () = redis::cmd("SET").arg("s:short").arg("gone").arg("PX").arg(50).query(&mut c).unwrap();
    wait_until("the expiry cycle to remove s:short", || server.seqno() == before + 2);
    let mut journal = server.journal();
    let (removal, set) = (journal.pop().unwrap(), journal.pop().unwrap());
    assert_eq!((set.seqno, removal.seqno), (before + 1, before + 2));
    assert!(!set.keys.is_empty() && set.keys.iter().all(|k| k == "s:short"), "{set:?}");
    assert_eq!(removal.keys, ["s:short"; 2], "head and expiry-index nodes: {removal:?}");
    // A consumer blocked on an empty list, served by a push from another client.
    let mut consumer = server.send_raw(&["BLPOP", "l:work", "0"]);
    server.wait_blocked(1);
    let _: i64 = c.rpush("l:work", &["task-1", "task-2"]).unwrap();
    let mut reply = [0u8; 64];
    let n = consumer.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"*2\r\n$6\r\nl:work\r\n$6\r\ntask-1\r\n", "the consumer got the first element");
}

#[test]
fn every_type_replicates_and_an_online_rollback_restores_every_key_exactly() {
    let dir = tempdir();
    let (ardmore, brynmawr) = Server::bc_pair(dir.path());

    seed(&ardmore);
    let seeded = ardmore.seqno();
    wait_until("BrynMawr to hold the seed", || brynmawr.seqno() == seeded);
    let before = dump(&ardmore);
    assert_eq!(before.len(), 9, "{before:?}");
    assert_eq!(dump(&brynmawr), before, "every type replicated, expiries included");
    assert!(before["h:user"].1 > 0 && before["s:ttl"].1 > 0 && before["s:plain"].1 == -1);

    // Churn replicates too.
    churn(&ardmore);
    let churned = ardmore.seqno();
    wait_until("BrynMawr to hold the churn", || brynmawr.seqno() == churned);
    let after = dump(&ardmore);
    assert_eq!(dump(&brynmawr), after);
    counts_agree(&ardmore);
    counts_agree(&brynmawr);
    assert_ne!(after, before);
    assert!(
        !after.contains_key("h:user") && after.contains_key("set:colours") && !after.contains_key("s:short")
    );

    // Roll Ardmore back online to the seed: every key as it was, TTLs exact.
    ardmore.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    let rolled = ardmore.ctl(&["rollback", "--to-seqno", &seeded.to_string()]);
    assert_eq!(rolled["journal_seqno"], seeded);
    assert_eq!(dump(&ardmore), before, "rollback restored every key, type and expiry");
    counts_agree(&ardmore);
    ardmore.verify();
    brynmawr.verify();

    // The log says what changed in application terms, with commands to re-apply it.
    let path = ardmore.status()["last_rollback"]["log_path"].as_str().unwrap().to_owned();
    let shown = common::ctl_json(&ardmore.data_dir, &["lost-transactions", "show", &path, "--json"]);
    let changes: Vec<serde_json::Value> = shown["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["changes"].as_array().unwrap().clone())
        .collect();
    let find = |node: &str, key: &str| {
        changes
            .iter()
            .find(|c| c["node"] == node && c["key"] == key)
            .unwrap_or_else(|| panic!("{node} {key}"))
    };
    let city = changes.iter().find(|c| c["node"] == "hash-field" && c["element"] == "city").unwrap();
    assert_eq!((city["key"].as_str(), city["after"].as_str()), (Some("h:user"), Some("Bergen")));
    assert_eq!(city["reapply"], "HSET \"h:user\" \"city\" \"Bergen\"");
    assert_eq!(find("zset-member", "z:board")["reapply"], "ZADD \"z:board\" \"99\" \"cy\"");
    let renamed: Vec<&str> = changes
        .iter()
        .filter(|c| c["node"] == "set-member" && c["key"] == "set:colours")
        .map(|c| c["element"].as_str().unwrap())
        .collect();
    assert_eq!(renamed, ["blue", "cyan", "green"], "RENAME moved every member node");
    assert!(find("list-element", "l:work")["after"].is_string());
    let plain = changes.iter().find(|c| c["key"] == "s:plain" && c["node"] == "string").unwrap();
    assert!(plain["expire_after_ms"].as_u64().unwrap() > 0, "{plain}");
    // The counts a restart takes from the file are the ones kept at each commit.
    let mut ardmore = ardmore;
    ardmore.restart();
    counts_agree(&ardmore);
}

#[test]
fn a_secondary_hides_an_expired_key_but_only_the_primary_removes_it() {
    let dir = tempdir();
    let (ardmore, brynmawr) = Server::bc_pair(dir.path());
    let mut p = ardmore.client();
    // The key must replicate, and the stream stop, before Ardmore's expiry cycle removes it:
    // 1.5 s leaves room for a loaded machine (the steps take tens of milliseconds idle).
    let () = redis::cmd("SET").arg("session").arg("abc").arg("PX").arg(1500).query(&mut p).unwrap();
    let () = p.set("keep", "yes").unwrap();
    wait_until("BrynMawr to hold both keys", || brynmawr.seqno() == 2);
    // Hold back what Ardmore writes next, so BrynMawr sees the key only as replicated.
    ardmore.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    let mut s = brynmawr.client();
    wait_until("the session to expire on BrynMawr", || {
        s.get::<_, Option<String>>("session").unwrap().is_none()
    });
    assert_eq!(redis::cmd("TTL").arg("session").query::<i64>(&mut s).unwrap(), -2);
    assert!(!s.exists::<_, bool>("session").unwrap());
    assert_eq!(s.get::<_, String>("keep").unwrap(), "yes");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(brynmawr.seqno(), 2, "a secondary writes nothing of its own");
    // The primary removes it as a journaled transaction, which then replicates.
    wait_until("Ardmore's expiry cycle to remove the session", || ardmore.seqno() == 3);
    let last = ardmore.journal().pop().unwrap();
    assert_eq!(last.keys, vec!["session".to_owned(), "session".to_owned()], "head and expiry-index nodes");
    ardmore.ctl(&["source", "start", "--receiver", "BrynMawr", "--addr", &brynmawr.repl_addr()]);
    wait_until("BrynMawr to receive the removal", || brynmawr.seqno() == 3);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut s).unwrap(), 1);
    brynmawr.verify();
}

#[test]
fn si_streams_carry_collection_changes_with_their_tags() {
    let dir = tempdir();
    let root = dir.path();
    let ardmore = Server::start_replicating(root, "Ardmore");
    let malvern = Server::start_supplementary(root, "Malvern");
    ardmore.ctl(&["promote"]);
    let backup = root.join("ardmore.backup");
    ardmore.ctl(&["backup", "--to", backup.to_str().unwrap()]);
    malvern.ctl(&["receiver", "start", "--si", "--updateresync", backup.to_str().unwrap()]);
    ardmore.ctl(&["source", "start", "--receiver", "Malvern", "--addr", &malvern.repl_addr(), "--si"]);

    let mut a = ardmore.client();
    let _: i64 = a.hset("cart:1", "apples", 3).unwrap();
    let _: i64 = a.zadd("rank", "ann", 5).unwrap();
    let _: i64 = a.rpush("feed", &["one", "two"]).unwrap();
    let () =
        redis::pipe().atomic().hincr("cart:1", "apples", 2).zincr("rank", "ann", 1).query(&mut a).unwrap();
    wait_until("Malvern to hold stream 1 seqno 4", || malvern.stream_seqno(1) == 4);
    // Malvern's own update, in its own stream 0.
    let mut m = malvern.client();
    let _: i64 = m.sadd("local:set", "mine").unwrap();

    // A client blocked on Malvern is served by an element that arrives over the stream, and
    // WATCH on Malvern sees changes that arrive over it.
    let mut consumer = malvern.send_raw(&["BLPOP", "q:job", "0"]);
    malvern.wait_blocked(1);
    let mut watcher = malvern.client();
    let () = redis::cmd("WATCH").arg("cart:1").query(&mut watcher).unwrap();
    let _: i64 = a.rpush("q:job", "j1").unwrap();
    let _: i64 = a.hset("cart:1", "pears", 1).unwrap();
    let mut reply = [0u8; 64];
    let n = consumer.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"*2\r\n$5\r\nq:job\r\n$2\r\nj1\r\n");
    wait_until("Malvern to hold stream 1 seqno 6", || malvern.stream_seqno(1) == 6);
    let exec: Option<(i64,)> = redis::pipe().atomic().sadd("local:other", "x").query(&mut watcher).unwrap();
    assert_eq!(exec, None, "EXEC fails: a watched key changed over the stream");
    assert_eq!(m.hget::<_, _, String>("cart:1", "apples").unwrap(), "5");
    assert_eq!(m.zscore::<_, _, f64>("rank", "ann").unwrap(), 6.0);
    assert_eq!(m.lrange::<_, Vec<String>>("feed", 0, -1).unwrap(), vec!["one", "two"]);
    let journal = malvern.journal();
    let tagged: Vec<(u64, u64, Vec<String>)> =
        journal.iter().map(|e| (e.stream, e.stream_seqno, e.keys.clone())).collect();
    let cart = tagged
        .iter()
        .find(|t| t.2.contains(&"cart:1".to_owned()) && t.2.contains(&"rank".to_owned()))
        .unwrap();
    assert_eq!((cart.0, cart.1), (1, 4), "the mixed transaction keeps its stream tag");
    let own = tagged.iter().find(|t| t.2.contains(&"local:set".to_owned())).unwrap();
    assert_eq!((own.0, own.1), (0, 1));
    let served = tagged.iter().find(|t| t.0 == 0 && t.2.contains(&"q:job".to_owned())).unwrap();
    assert_eq!(served.1, 2, "serving the consumer is Malvern's own transaction in stream 0");

    // Both sides create the same hash: the stream's head wins, and Malvern's own elements
    // (another generation) are left to its reclaim cycle, not orphaned.
    let _: i64 = m.hset("both", "mine", 1).unwrap();
    let nodes = malvern.status()["nodes"].as_u64().unwrap();
    let _: i64 = a.hset("both", "theirs", 2).unwrap();
    wait_until("Malvern to hold stream 1 seqno 7", || malvern.stream_seqno(1) == 7);
    let both: BTreeMap<String, String> = m.hgetall("both").unwrap();
    assert_eq!(both.keys().collect::<Vec<_>>(), ["theirs"]);
    wait_until("Malvern to reclaim its own elements of both", || {
        malvern.status()["nodes"].as_u64() == Some(nodes)
    });
    malvern.verify();
}

/// A large collection deleted whole: one small transaction removes its head (the elements
/// become garbage), a new collection of the same name is written at once and never meets
/// the old elements, the primary reclaims them in bounded transactions that replicate, and a
/// rollback past the delete restores every element exactly.
#[test]
fn a_large_collection_is_deleted_in_one_small_transaction_and_reclaimed_in_bounded_ones() {
    let dir = tempdir();
    let (ardmore, brynmawr) = Server::bc_pair(dir.path());

    let mut c = ardmore.client();
    for chunk in 0..10 {
        let fields: Vec<(String, String)> =
            (0..500).map(|i| (format!("f{}", chunk * 500 + i), format!("v{i}"))).collect();
        let () = c.hset_multiple("big", &fields).unwrap();
    }
    let members: Vec<(f64, String)> = (0..3000).map(|i| (f64::from(i % 50), format!("m{i}"))).collect();
    let _: i64 = c.zadd_multiple("zbig", &members).unwrap();
    let items: Vec<String> = (0..3000).map(|i| format!("item{i}")).collect();
    let _: i64 = c.rpush("lbig", &items).unwrap();
    let seeded = ardmore.seqno();
    let before = dump(&ardmore);
    let nodes_before = ardmore.status()["nodes"].as_u64().unwrap();

    let deleted: i64 = c.del(&["big", "zbig", "lbig"]).unwrap();
    assert_eq!(deleted, 3);
    let () = c.hset_multiple("big", &[("fresh", "1")]).unwrap();
    let fresh: BTreeMap<String, String> = c.hgetall("big").unwrap();
    assert_eq!(fresh.len(), 1, "the new hash never sees the old fields: {}", fresh.len());

    // Reclaimed to the two nodes of the new hash, in bounded transactions.
    wait_until("the reclaim cycle to remove every old element", || {
        ardmore.status()["nodes"].as_u64() == Some(2)
    });
    let journal = ardmore.journal();
    let del = &journal[usize::try_from(seeded).unwrap()];
    assert!(del.keys.len() <= 10, "the DEL record holds {} nodes", del.keys.len());
    // The reclaim cycle runs on its own, so its first transaction may come before the new
    // hash's: the reclaims are the records past the DEL that do not write the new head.
    let reclaims: Vec<_> = journal[usize::try_from(seeded).unwrap() + 1..]
        .iter()
        .filter(|r| !r.keys.iter().any(|k| k == "Kbig"))
        .collect();
    let removed: usize = reclaims.iter().map(|r| r.keys.len()).sum();
    assert!(removed + 2 >= usize::try_from(nodes_before).unwrap() - 6, "{removed} of {nodes_before}");
    assert!(reclaims.len() >= 12, "{} reclaim transactions", reclaims.len());
    assert!(reclaims.iter().all(|r| r.keys.len() <= 1025), "a reclaim transaction is bounded");

    let last = ardmore.seqno();
    wait_until("BrynMawr to hold the reclaim", || brynmawr.seqno() == last);
    assert_eq!(brynmawr.status()["nodes"].as_u64(), Some(2));
    assert_eq!(dump(&brynmawr), dump(&ardmore));
    ardmore.verify();
    brynmawr.verify();

    // A rollback past the delete brings every element back, as it was.
    ardmore.ctl(&["source", "stop", "--receiver", "BrynMawr"]);
    ardmore.ctl(&["rollback", "--to-seqno", &seeded.to_string()]);
    assert_eq!(dump(&ardmore), before);
    assert_eq!(ardmore.status()["nodes"].as_u64(), Some(nodes_before));
    ardmore.verify();
}
