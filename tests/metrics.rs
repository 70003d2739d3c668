//! /metrics and /health.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

/// The value of one sample line, e.g. `name{database="appdb"}`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn metrics_after_pgbench_have_exporter_names_and_histograms() {
    let p = Pooler::start(
        &format!("pool_mode = \"transaction\"\nadmin_users = \"{MD5_USER}\"\n"),
        &format!("mdb = \"host=127.0.0.1 port={} dbname={DB}\"\n", pg().port),
    )
    .await;
    let addr = p.app.metrics_addr().expect("metrics enabled");
    let bench = |args: &[&str]| p.pgbench("mdb", args);
    let o = bench(&["-i", "-q", "-s", "1", "--no-vacuum"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bench(&["-c", "4", "-j", "2", "-t", "50", "-n"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A client connected at the scrape (pgbouncer_client_connections).
    let held = p.connect(SCRAM_USER, SCRAM_PASS, "mdb").await;
    held.simple_query("SELECT 1").await.unwrap();
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let me = format!(
        "tidepool_instance_info{{peer_id=\"0\",pid=\"{}\",version=\"{}\"}} 1",
        std::process::id(),
        tidepool::VERSION
    );
    assert!(text.contains(&me), "{me} in\n{text}");
    for name in [
        "pgbouncer_up 1",
        "pgbouncer_config_max_client_connections",
        "pgbouncer_pools_client_active_connections{database=\"mdb\",user=\"scram_user\"}",
        "pgbouncer_pools_client_waiting_connections{",
        "pgbouncer_pools_server_active_connections{",
        "pgbouncer_pools_server_idle_connections{",
        "pgbouncer_pools_server_used_connections{",
        "pgbouncer_pools_server_testing_connections{",
        "pgbouncer_pools_server_login_connections{",
        "pgbouncer_pools_client_maxwait_seconds{",
        "pgbouncer_stats_queries_duration_seconds_total{database=\"mdb\"}",
        "pgbouncer_stats_server_in_transaction_seconds_total{",
        "pgbouncer_stats_client_wait_seconds_total{",
        "pgbouncer_stats_received_bytes_total{",
        "pgbouncer_stats_sent_bytes_total{",
        // pgbouncer_exporter 0.11+ names and labels.
        "pgbouncer_databases_pool_size{name=\"mdb\",host=\"127.0.0.1\",",
        // Every configured database, from the start (no client used it).
        "pgbouncer_databases_pool_size{name=\"via_unix\",",
        "pgbouncer_databases_reserve_pool{name=\"mdb\",",
        "pgbouncer_stats_totals_queries_pooled_total{database=\"mdb\"}",
        "pgbouncer_stats_totals_sql_transactions_pooled_total{database=\"mdb\"}",
        "pgbouncer_stats_totals_server_assignments_total{database=\"mdb\"}",
        "pgbouncer_stats_totals_binds_total{",
        "pgbouncer_version_info{version=",
        "pgbouncer_config_max_user_connections ",
        "pgbouncer_databases ",
        "pgbouncer_pools ",
        "pgbouncer_used_servers ",
        "pgbouncer_client_connections{database=\"mdb\",user=\"scram_user\",",
        "pgbouncer_pools_client_active_cancel_connections{",
        "pgbouncer_pools_server_being_canceled_connections{",
        "pgbouncer_databases_current_connections{",
        "pgbouncer_databases_max_connections{",
        "pgbouncer_databases_paused{",
        "pgbouncer_databases_disabled{",
        "tidepool_query_duration_seconds_bucket{database=\"mdb\",le=\"0.001\"}",
        "tidepool_transaction_duration_seconds_bucket{database=\"mdb\"",
        "tidepool_client_wait_seconds_bucket{database=\"mdb\"",
        "tidepool_server_connect_seconds_count{database=\"mdb\"}",
        "tidepool_pool_checkouts_total{database=\"mdb\"}",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    let queries = sample(
        &text,
        "pgbouncer_stats_queries_pooled_total{database=\"mdb\"}",
    )
    .unwrap();
    let xacts = sample(
        &text,
        "pgbouncer_stats_sql_transactions_pooled_total{database=\"mdb\"}",
    )
    .unwrap();
    assert!(
        queries >= 200.0 && xacts >= 200.0,
        "queries {queries} xacts {xacts}"
    );

    // promtool (Debian's prometheus package; scripts/test.sh installs it).
    if std::path::Path::new("/usr/bin/promtool").exists() {
        let mut child = std::process::Command::new("/usr/bin/promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        assert!(
            std::env::var_os("TIDEPOOL_REQUIRE_TOOLS").is_none(),
            "promtool missing"
        );
    }

    // The same moment, read through the console: the numbers agree.
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let msgs = admin.simple_query("SHOW STATS_TOTALS").await.unwrap();
    let row = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("mdb") => Some(r),
            _ => None,
        })
        .unwrap();
    let (_, text) = http_get(addr, "/metrics").await;
    let q: f64 = row.get("query_count").unwrap().parse().unwrap();
    let x: f64 = row.get("xact_count").unwrap().parse().unwrap();
    assert_eq!(
        sample(
            &text,
            "pgbouncer_stats_queries_pooled_total{database=\"mdb\"}"
        ),
        Some(q)
    );
    assert_eq!(
        sample(
            &text,
            "pgbouncer_stats_sql_transactions_pooled_total{database=\"mdb\"}"
        ),
        Some(x)
    );
    let (status, body) = http_get(addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert_eq!(http_get(addr, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_tidepool() {
    if !std::path::Path::new("/usr/bin/prometheus").exists() {
        assert!(
            std::env::var_os("TIDEPOOL_REQUIRE_TOOLS").is_none(),
            "prometheus missing"
        );
        eprintln!("prometheus not installed: skipped");
        return;
    }
    let p = Pooler::start("", "").await;
    let target = p.app.metrics_addr().unwrap();
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        d.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tidepool\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(
        std::process::Command::new("/usr/bin/prometheus")
            .arg(format!(
                "--config.file={}",
                d.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                d.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = wait_until(60, || async {
        if tokio::net::TcpStream::connect(prom).await.is_err() {
            return false;
        }
        let (_, body) = http_get(prom, "/api/v1/query?query=up%7Bjob%3D%22tidepool%22%7D").await;
        body.contains("\"value\":[") && body.contains("\"1\"]")
    })
    .await;
    assert!(up, "Prometheus reports the tidepool target up");
}

/// Before any client: every family that has something to say is there
/// (a family with no sample, such as the pools of a pooler with none,
/// used to stop the encoder and cut the page short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_pooler_shows_every_configured_database() {
    let p = Pooler::start("", "").await;
    let addr = p.app.metrics_addr().expect("metrics enabled");
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "pgbouncer_up 1",
        "pgbouncer_version_info{",
        &format!("pgbouncer_databases_pool_size{{name=\"{DB}\","),
        "pgbouncer_databases_pool_size{name=\"via_unix\",",
        "pgbouncer_databases_disabled{",
        "tidepool_instance_info{",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}
