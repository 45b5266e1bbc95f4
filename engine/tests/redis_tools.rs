//! The stock Redis tools work unchanged: `redis-cli` (interactive-style commands, MULTI
//! through a pipe) and `redis-benchmark` (SET/GET, pipelined), and a SIGTERM during a write
//! load stops the server cleanly without losing an acknowledged write.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests fail loudly by design

mod common;

use std::process::Command;

use common::{Server, tempdir};
use redis::Commands;

fn tool(name: &str) -> Command {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().map(|o| o.status.success());
    assert!(
        found.unwrap_or(false),
        "{name} is not installed; install Debian's redis-tools (.ci/run does this)"
    );
    Command::new(name)
}

fn cli(server: &Server, args: &[&str]) -> String {
    let out =
        tool("redis-cli").args(["-p", &server.resp_port.to_string()]).args(args).output().expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

#[test]
fn redis_cli_works() {
    let dir = tempdir();
    let server = Server::start(&dir.path().join("a"), "Ardmore", &[]);
    assert_eq!(cli(&server, &["PING"]), "PONG");
    assert_eq!(cli(&server, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(&server, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(&server, &["INCRBY", "n", "41"]), "41");
    assert_eq!(cli(&server, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(cli(&server, &["MGET", "a", "b", "c"]), "1\n2"); // the nil prints as an empty line
    assert_eq!(cli(&server, &["DBSIZE"]), "4");
    assert_eq!(cli(&server, &["--scan", "--pattern", "*e*"]), "greeting");
    assert!(cli(&server, &["INFO", "replication"]).contains("role:master"));
    assert_eq!(cli(&server, &["-3", "GET", "missing"]), "");
    // A MULTI/EXEC typed into redis-cli's stdin.
    let mut child = tool("redis-cli")
        .args(["-p", &server.resp_port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"MULTI\nINCR n\nINCR n\nEXEC\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\nQUEUED\nQUEUED\n42\n43\n");
    // --pipe mass insertion (raw RESP on stdin).
    let mut payload = Vec::new();
    for i in 0..1000 {
        let (k, v) = (format!("bulk:{i}"), i.to_string());
        payload.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n", k.len(), v.len()).as_bytes(),
        );
    }
    let mut child = tool("redis-cli")
        .args(["-p", &server.resp_port.to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&payload).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 1000"), "{text}");
    assert_eq!(cli(&server, &["DBSIZE"]), "1004");
    server.verify();
}

#[test]
fn redis_benchmark_runs_unchanged() {
    let dir = tempdir();
    let server = Server::start(&dir.path().join("a"), "Bench", &[]);
    for extra in [&[][..], &["-P", "16"][..]] {
        let out = tool("redis-benchmark")
            .args([
                "-p",
                &server.resp_port.to_string(),
                "-t",
                "set,get",
                "-n",
                "2000",
                "-c",
                "20",
                "-r",
                "500",
                "-q",
            ])
            .args(extra)
            .output()
            .expect("redis-benchmark");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "redis-benchmark failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("SET:") && text.contains("GET:"), "{text}");
        assert!(!text.to_lowercase().contains("error"), "{text}");
    }
    let mut c = server.client();
    let keys: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(keys > 0 && keys <= 500, "random keys within -r 500: {keys}");
    assert!(
        server.status()["journal_seqno"].as_u64().unwrap() >= 4000,
        "every SET is a journaled transaction"
    );
    server.verify();
}

#[test]
fn sigterm_during_writes_stops_cleanly_and_loses_nothing() {
    let dir = tempdir();
    let mut server = Server::start(&dir.path().join("a"), "Term", &[]);
    let url = server.url();
    let writer = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut acked = 0u64;
        while c.set::<_, _, ()>(format!("k{acked}"), acked).is_ok() {
            acked += 1;
        }
        acked
    });
    // Wait until the load is really under way, observed through the server itself.
    while server.status()["journal_seqno"].as_u64().unwrap() < 200 {
        std::thread::yield_now();
    }
    server.stop(); // asserts a zero exit status
    let acked = writer.join().unwrap();
    assert!(server.log_text().contains("stopped"), "clean shutdown is logged");
    server.restart();
    let mut c = server.client();
    for i in 0..acked {
        assert_eq!(c.get::<_, Option<u64>>(format!("k{i}")).unwrap(), Some(i), "acknowledged k{i} lost");
    }
    server.verify();
}
