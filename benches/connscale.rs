//! Connection-scale load generator: opens many client connections through a
//! pooler (authenticated, then idle), then has each run a transaction at a
//! low rate, and reports latency percentiles. The pooler's memory is read
//! by the caller (benches/pgbench/macro.py --connscale) from /proc while
//! the clients sit idle.
//!
//!     cargo bench --bench connscale -- --port 6432 --clients 10000 --every 10 --secs 30
//!
//! Protocol with the caller, one line each on stdout / stdin:
//! `CONNECTED <n> <seconds>` once every client is logged in; it then waits
//! for a line on stdin before the active phase; `RESULT k=v ...` at its end,
//! then it holds the connections open until another line on stdin.
//! Without `--port` (as plain `cargo bench` runs it) it does nothing.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

struct Args {
    host: String,
    port: u16,
    user: String,
    password: String,
    db: String,
    clients: usize,
    /// Seconds between one client's transactions.
    every: f64,
    /// Length of the active phase.
    secs: u64,
    /// Connections opened at once.
    parallel: usize,
}

fn args() -> Option<Args> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 0,
        user: "bench".into(),
        password: "bench".into(),
        db: "bench".into(),
        clients: 10_000,
        every: 10.0,
        secs: 30,
        parallel: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_default();
        match k.as_str() {
            "--host" => a.host = v(),
            "--port" => a.port = v().parse().ok()?,
            "--user" => a.user = v(),
            "--password" => a.password = v(),
            "--db" => a.db = v(),
            "--clients" => a.clients = v().parse().ok()?,
            "--every" => a.every = v().parse().ok()?,
            "--secs" => a.secs = v().parse().ok()?,
            "--parallel" => a.parallel = v().parse().ok()?,
            _ => {}
        }
    }
    (a.port != 0).then_some(a)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[allow(clippy::too_many_lines)]
async fn run(a: Args) -> Result<(), String> {
    let info = format!(
        "host={} port={} user={} password={} dbname={} connect_timeout=60",
        a.host, a.port, a.user, a.password, a.db
    );
    let started = Instant::now();
    let clients: Vec<_> = stream::iter(0..a.clients)
        .map(|_| {
            let info = info.clone();
            async move {
                let (client, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok::<_, String>(client)
            }
        })
        .buffer_unordered(a.parallel)
        .collect()
        .await;
    let mut ok = Vec::with_capacity(clients.len());
    let mut connect_errors = 0;
    for c in clients {
        match c {
            Ok(c) => ok.push(c),
            Err(e) => {
                if connect_errors == 0 {
                    eprintln!("connect: {e}");
                }
                connect_errors += 1;
            }
        }
    }
    println!(
        "CONNECTED {} {:.1}",
        ok.len(),
        started.elapsed().as_secs_f64()
    );
    // Idle until the caller has read the pooler's memory.
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await;

    let n = ok.len().max(1);
    let every = Duration::from_secs_f64(a.every);
    let end = Instant::now() + Duration::from_secs(a.secs);
    let lat = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = ok
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (lat, errors) = (lat.clone(), errors.clone());
            // Spread the clients evenly over one period.
            let offset = every.mul_f64(i as f64 / n as f64);
            tokio::spawn(async move {
                let mut next = tokio::time::Instant::now() + offset;
                let aid = (i % 100_000) + 1;
                let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid}");
                loop {
                    tokio::time::sleep_until(next).await;
                    if Instant::now() >= end {
                        break;
                    }
                    let t = Instant::now();
                    match c.simple_query(&sql).await {
                        Ok(_) => lat
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(t.elapsed().as_micros() as u64),
                        Err(_) => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    next += every;
                }
                // Kept open: the caller reads memory once more, with every
                // client idle after its transactions.
                c
            })
        })
        .collect();
    let mut open = Vec::with_capacity(tasks.len());
    for t in tasks {
        open.push(t.await.map_err(|e| e.to_string())?);
    }
    let mut l = lat.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "RESULT clients={} connect_errors={} xacts={} errors={} tps={:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        n,
        connect_errors,
        l.len(),
        errors.load(std::sync::atomic::Ordering::Relaxed),
        l.len() as f64 / a.secs as f64,
        ms(percentile(&l, 0.5)),
        ms(percentile(&l, 0.9)),
        ms(percentile(&l, 0.99)),
        ms(percentile(&l, 0.999)),
        ms(l.last().copied().unwrap_or(0)),
    );
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await;
    drop(open);
    Ok(())
}

fn main() {
    let Some(a) = args() else {
        eprintln!("connscale: no --port given, nothing to do (see benches/connscale.rs)");
        return;
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("connscale: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(a)) {
        eprintln!("connscale: {e}");
        std::process::exit(1);
    }
}
