//! A rolling restart of one of two poolers sharing a port (so_reuseport,
//! peering) under load: the old one gets SIGTERM, a new one starts on the
//! same port, and no client is refused.

#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

/// Linux hands a closing listener's queued connections to another of the
/// port's listeners when this is 1. The pooler takes what is queued
/// before it closes (without that, about one run in five here had resets
/// with this at 0); this covers a connection completing during the close
/// itself, which would otherwise make the test fail once in a while.
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Turn migration on when it can be (as root); a machine-wide setting,
/// left on, as docs/scale-out.md advises for so_reuseport.
fn migrate_on() {
    let on = || std::fs::read(MIGRATE_REQ).is_ok_and(|v| v.starts_with(b"1"));
    if !on() && std::fs::write(MIGRATE_REQ, "1").is_err() {
        eprintln!("{MIGRATE_REQ} is 0 and cannot be set: a rare reset is possible");
    }
}

/// A pooler's folder: its users, its Unix socket, and its config with
/// `peer_id` (every peer listed by folder in `[peers]`).
fn peer_config(dir: &Path, port: u16, id: u32, peers: &[(u32, &Path)]) -> std::path::PathBuf {
    std::fs::write(
        dir.join("users.txt"),
        format!("\"{MD5_USER}\" \"{MD5_PASS}\"\n"),
    )
    .unwrap();
    let mut list = String::from("[peers]\n");
    for (n, d) in peers {
        list.push_str(&format!("{n} = \"host={} port={port}\"\n", d.display()));
    }
    let config = binary_config_with(
        port,
        &format!(
            "so_reuseport = 1\npeer_id = {id}\npool_mode = \"transaction\"\ndefault_pool_size = 4"
        ),
        &list,
    )
    .replace(
        "unix_socket_dir = \"\"",
        &format!("unix_socket_dir = \"{}\"", dir.display()),
    );
    let path = dir.join("t.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Until the pooler whose folder is `dir` answers on its Unix socket.
async fn answers(dir: &Path, port: u16) -> bool {
    let sock = dir.join(format!(".s.PGSQL.{port}"));
    wait_until(30, || async {
        tokio::net::UnixStream::connect(&sock).await.is_ok()
    })
    .await
}

/// The transactions the pooler in `dir` has counted for DB.
async fn xacts(dir: &Path, port: u16) -> i64 {
    let console = connect(&format!(
        "host={} port={port} user={MD5_USER} password={MD5_PASS} dbname=pgbouncer",
        dir.display()
    ))
    .await
    .unwrap();
    let msgs = console.simple_query("SHOW STATS_TOTALS").await.unwrap();
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some(DB) => {
                r.get("xact_count").and_then(|v| v.parse::<i64>().ok())
            }
            _ => None,
        })
        .sum()
}

/// What the load saw.
#[derive(Default)]
struct Load {
    sessions: AtomicU64,
    /// Each failure: a refused or reset connection, a failed query.
    failures: Mutex<Vec<String>>,
}

/// Short sessions over TCP, one after another, until `stop`: connect, run
/// three queries, leave.
async fn client_loop(port: u16, load: Arc<Load>, stop: Arc<AtomicBool>) {
    let info =
        format!("host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname={DB}");
    while !stop.load(Ordering::Relaxed) {
        let r = async {
            let c = connect(&info).await?;
            for _ in 0..3 {
                c.simple_query("SELECT 1").await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }
        .await;
        match r {
            Ok(()) => {
                load.sessions.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => load.failures.lock().unwrap().push(format!("{e:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_refuses_no_client() {
    migrate_on();
    let port = free_port();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, a2) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    let old = run_binary(&peer_config(a, port, 1, &[(1, a), (2, b)]), &[]);
    let _other = run_binary(&peer_config(b, port, 2, &[(1, a), (2, b)]), &[]);
    assert!(
        answers(a, port).await && answers(b, port).await,
        "peers started"
    );
    let (load, stop) = (Arc::new(Load::default()), Arc::new(AtomicBool::new(false)));
    let tasks: Vec<_> = (0..16)
        .map(|_| tokio::spawn(client_loop(port, load.clone(), stop.clone())))
        .collect();
    let served = |n: u64| {
        let load = load.clone();
        async move { load.sessions.load(Ordering::Relaxed) >= n }
    };
    assert!(wait_until(30, || served(200)).await, "load runs");
    assert!(xacts(a, port).await > 0, "the old instance served");
    // The restart: SIGTERM to the old instance, which stops accepting and
    // drains; its replacement (same peer_id) starts on the same port.
    let pid = old.0.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let _new = run_binary(&peer_config(a2, port, 1, &[(1, a2), (2, b)]), &[]);
    assert!(answers(a2, port).await, "the new instance started");
    let mut old = old;
    let exited = wait_until(30, || {
        let done = old.0.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(exited, "the old instance drained and exited");
    let at_exit = load.sessions.load(Ordering::Relaxed);
    assert!(
        wait_until(30, || served(at_exit + 200)).await,
        "load goes on"
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = load.failures.lock().unwrap().clone();
    let sessions = load.sessions.load(Ordering::Relaxed);
    eprintln!("{sessions} sessions, {} failed", failures.len());
    assert!(failures.is_empty(), "refused or failed: {failures:?}");
    assert!(xacts(a2, port).await > 0, "the new instance took clients");
}
