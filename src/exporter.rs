//! Prometheus metrics and a health endpoint, served over HTTP/1 (hyper) on
//! `metrics_addr`.
//!
//! The `pgbouncer_*` families carry prometheus-community pgbouncer_exporter's
//! names and labels, so existing dashboards work unchanged; they are built at
//! scrape time from the same counters and pool reports SHOW STATS / SHOW
//! POOLS read, so the two never disagree. The live `tidepool_*` families
//! (`metrics`) are appended.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Encoder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use MetricType::{COUNTER, GAUGE};

use crate::stats::C;
use crate::Shared;

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

/// One family built at scrape time.
struct Family {
    f: MetricFamily,
}

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        Family { f }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = Metric::default();
        m.set_label(labels.iter().map(|(k, v)| label(k, v)).collect());
        if self.f.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.f.mut_metric().push(m);
    }
}

type Reports<'a> = [(&'a Arc<crate::pool::Pool>, crate::pool::PoolReport)];

/// The whole scrape, in Prometheus text format: the exporter's families in
/// its order (process, pools, stats, databases), then tidepool's own.
pub fn render(shared: &Shared) -> String {
    let cfg = shared.config();
    let mut pools = shared.pools.all();
    pools.sort_by(|a, b| a.key.cmp(&b.key));
    let reports: Vec<_> = pools.iter().map(|p| (p, p.report())).collect();

    let mut fams = Vec::new();
    let mut up = Family::new("pgbouncer_up", "The pooler is up and answering.", GAUGE);
    up.add(&[], 1.0);
    fams.push(up);
    // Which of several instances answered (docs/scale-out.md).
    let mut me = Family::new(
        "tidepool_instance_info",
        "This instance: its peer_id, process id and version.",
        GAUGE,
    );
    let (peer, pid) = (
        cfg.settings.peer_id.to_string(),
        std::process::id().to_string(),
    );
    me.add(
        &[
            ("peer_id", &peer),
            ("pid", &pid),
            ("version", crate::VERSION),
        ],
        1.0,
    );
    fams.push(me);
    let mut max_clients = Family::new(
        "pgbouncer_config_max_client_connections",
        "max_client_conn.",
        GAUGE,
    );
    max_clients.add(&[], cfg.settings.max_client_conn as f64);
    fams.push(max_clients);
    let mut max_user = Family::new(
        "pgbouncer_config_max_user_connections",
        "max_user_connections (0 = unlimited).",
        GAUGE,
    );
    max_user.add(&[], cfg.settings.max_user_connections as f64);
    fams.push(max_user);
    let mut version = Family::new("pgbouncer_version_info", "The pooler's version.", GAUGE);
    version.add(&[("version", crate::VERSION)], 1.0);
    fams.push(version);
    list_families(shared, &cfg, &reports, &mut fams);
    pool_families(&reports, &mut fams);
    stat_families(shared, &mut fams);
    database_families(shared, &cfg, &pools, &reports, &mut fams);

    // The encoder refuses a family with no sample (and stops there): a
    // family with nothing to say now (no client yet) is left out.
    let mut all: Vec<MetricFamily> = fams
        .into_iter()
        .map(|f| f.f)
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    all.extend(shared.metrics.registry.gather());
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = prometheus::TextEncoder::new().encode(&all, &mut out) {
        tracing::error!("/metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

type PoolFn = fn(&crate::pool::PoolReport) -> f64;

/// SHOW POOLS as gauges, labelled by database and user.
const POOL_GAUGES: [(&str, &str, PoolFn); 13] = [
    (
        "pgbouncer_pools_client_active_connections",
        "Client connections linked or idle.",
        |r| r.clients.saturating_sub(r.waiting) as f64,
    ),
    (
        "pgbouncer_pools_client_waiting_connections",
        "Client connections waiting for a server.",
        |r| r.waiting as f64,
    ),
    (
        "pgbouncer_pools_server_active_connections",
        "Server connections linked to a client.",
        |r| r.servers.saturating_sub(r.idle) as f64,
    ),
    (
        "pgbouncer_pools_server_idle_connections",
        "Server connections idle in the pool.",
        |r| r.idle as f64,
    ),
    (
        "pgbouncer_pools_server_used_connections",
        "Server connections released but not yet checked.",
        |_| 0.0,
    ),
    (
        "pgbouncer_pools_server_testing_connections",
        "Server connections being tested.",
        |_| 0.0,
    ),
    (
        "pgbouncer_pools_server_login_connections",
        "Server connections logging in.",
        |_| 0.0,
    ),
    (
        "tidepool_pools_server_pinned_connections",
        "Server connections kept by clients holding session state (docs/transaction-mode.md).",
        |r| r.pinned as f64,
    ),
    (
        "pgbouncer_pools_client_maxwait_seconds",
        "Longest current wait for a server.",
        |r| r.maxwait.as_secs_f64(),
    ),
    // Cancel requests are forwarded at once, never queued or counted
    // against a server: these are PgBouncer's and the exporter's, always 0.
    (
        "pgbouncer_pools_client_active_cancel_connections",
        "Clients whose cancel request was forwarded and is awaiting its answer.",
        |_| 0.0,
    ),
    (
        "pgbouncer_pools_client_waiting_cancel_connections",
        "Clients whose cancel request waits to be forwarded.",
        |_| 0.0,
    ),
    (
        "pgbouncer_pools_server_active_cancel_connections",
        "Server connections forwarding a cancel request.",
        |_| 0.0,
    ),
    (
        "pgbouncer_pools_server_being_canceled_connections",
        "Servers waiting for in-flight cancel requests to land.",
        |_| 0.0,
    ),
];

fn pool_families(reports: &Reports<'_>, fams: &mut Vec<Family>) {
    for (name, help, f) in POOL_GAUGES {
        let mut fam = Family::new(name, help, GAUGE);
        for (p, r) in reports {
            fam.add(&[("database", &p.key.db), ("user", &p.key.user)], f(r));
        }
        fams.push(fam);
    }
}

/// SHOW STATS totals as counters per database; times in seconds.
const STAT_COUNTERS: [(&str, &str, C, f64); 7] = [
    (
        "pgbouncer_stats_queries_pooled_total",
        "Queries pooled.",
        C::Queries,
        1.0,
    ),
    (
        "pgbouncer_stats_queries_duration_seconds_total",
        "Time spent in queries.",
        C::QueryTime,
        1e-6,
    ),
    (
        "pgbouncer_stats_sql_transactions_pooled_total",
        "Transactions pooled.",
        C::Xacts,
        1.0,
    ),
    (
        "pgbouncer_stats_server_in_transaction_seconds_total",
        "Time servers spent in transactions.",
        C::XactTime,
        1e-6,
    ),
    (
        "pgbouncer_stats_client_wait_seconds_total",
        "Time clients waited for a server.",
        C::WaitTime,
        1e-6,
    ),
    (
        "pgbouncer_stats_received_bytes_total",
        "Bytes received from clients.",
        C::Received,
        1.0,
    ),
    (
        "pgbouncer_stats_sent_bytes_total",
        "Bytes sent to clients.",
        C::Sent,
        1.0,
    ),
];

/// SHOW STATS_TOTALS as pgbouncer_exporter 0.11+ names it
/// (`pgbouncer_stats_totals_*`); the names before 0.11
/// (`pgbouncer_stats_*`, [`STAT_COUNTERS`]) are kept beside them.
const TOTALS_COUNTERS: [(&str, &str, C, f64); 12] = [
    ("queries_pooled_total", "Queries pooled.", C::Queries, 1.0),
    (
        "queries_duration_seconds_total",
        "Time spent in queries.",
        C::QueryTime,
        1e-6,
    ),
    (
        "received_bytes_total",
        "Bytes received from clients.",
        C::Received,
        1.0,
    ),
    ("queries_total", "Requests pooled.", C::Queries, 1.0),
    ("sent_bytes_total", "Bytes sent to clients.", C::Sent, 1.0),
    (
        "client_wait_seconds_total",
        "Time clients waited for a server.",
        C::WaitTime,
        1e-6,
    ),
    (
        "sql_transactions_pooled_total",
        "Transactions pooled.",
        C::Xacts,
        1.0,
    ),
    (
        "server_in_transaction_seconds_total",
        "Time servers spent in transactions.",
        C::XactTime,
        1e-6,
    ),
    (
        "client_parses_total",
        "Parse messages from clients.",
        C::ClientParses,
        1.0,
    ),
    (
        "server_parses_total",
        "Parse messages sent to servers.",
        C::ServerParses,
        1.0,
    ),
    ("binds_total", "Bind messages.", C::Binds, 1.0),
    (
        "server_assignments_total",
        "Times a server was assigned to a client.",
        C::ServerAssignments,
        1.0,
    ),
];

fn stat_families(shared: &Shared, fams: &mut Vec<Family>) {
    let totals = shared.stats.totals();
    for (name, help, c, scale) in STAT_COUNTERS {
        let mut fam = Family::new(name, help, COUNTER);
        for (db, t) in &totals {
            fam.add(&[("database", db)], t.get(c) as f64 * scale);
        }
        fams.push(fam);
    }
    for (name, help, c, scale) in TOTALS_COUNTERS {
        let name = format!("pgbouncer_stats_totals_{name}");
        let mut fam = Family::new(&name, help, COUNTER);
        for (db, t) in &totals {
            fam.add(&[("database", db)], t.get(c) as f64 * scale);
        }
        fams.push(fam);
    }
}

/// SHOW LISTS as the exporter's gauges (`pgbouncer_databases`,
/// `pgbouncer_pools`, ...), and the clients by database, user,
/// application and state (`pgbouncer_client_connections`).
fn list_families(
    shared: &Shared,
    cfg: &crate::config::Config,
    reports: &Reports<'_>,
    fams: &mut Vec<Family>,
) {
    let servers: u32 = reports.iter().map(|(_, r)| r.servers).sum();
    let idle: u32 = reports.iter().map(|(_, r)| r.idle).sum();
    let users: std::collections::BTreeSet<&str> =
        reports.iter().map(|(p, _)| p.key.user.as_str()).collect();
    let dbs: std::collections::BTreeSet<&str> =
        reports.iter().map(|(p, _)| p.key.db.as_str()).collect();
    for (name, help, v) in [
        (
            "pgbouncer_databases",
            "Count of databases.",
            dbs.len().max(cfg.databases.len()) as f64,
        ),
        ("pgbouncer_users", "Count of users.", users.len() as f64),
        ("pgbouncer_pools", "Count of pools.", reports.len() as f64),
        ("pgbouncer_free_clients", "Count of free clients.", 0.0),
        (
            "pgbouncer_used_clients",
            "Count of used clients.",
            shared.client_count() as f64,
        ),
        (
            "pgbouncer_login_clients",
            "Count of clients in login state.",
            0.0,
        ),
        (
            "pgbouncer_free_servers",
            "Count of free servers.",
            idle as f64,
        ),
        (
            "pgbouncer_used_servers",
            "Count of used servers.",
            servers.saturating_sub(idle) as f64,
        ),
        (
            "pgbouncer_cached_dns_names",
            "Count of DNS names in the cache.",
            0.0,
        ),
        (
            "pgbouncer_cached_dns_zones",
            "Count of DNS zones in the cache.",
            0.0,
        ),
        (
            "pgbouncer_in_flight_dns_queries",
            "Count of in-flight DNS queries.",
            0.0,
        ),
    ] {
        let mut fam = Family::new(name, help, GAUGE);
        fam.add(&[], v);
        fams.push(fam);
    }
    let mut by: std::collections::BTreeMap<[String; 4], u64> = std::collections::BTreeMap::new();
    for c in shared.registry.clients() {
        let key = [
            c.database.to_string(),
            c.user.to_string(),
            c.application_name.to_string(),
            c.state().name().to_string(),
        ];
        *by.entry(key).or_default() += 1;
    }
    let mut clients = Family::new(
        "pgbouncer_client_connections",
        "Client connections by database, user, application name and state.",
        GAUGE,
    );
    for ([db, user, app, state], n) in &by {
        clients.add(
            &[
                ("database", db),
                ("user", user),
                ("application_name", app),
                ("state", state),
            ],
            *n as f64,
        );
    }
    fams.push(clients);
}

/// SHOW DATABASES as gauges per database.
fn database_families(
    shared: &Shared,
    cfg: &crate::config::Config,
    pools: &[Arc<crate::pool::Pool>],
    reports: &Reports<'_>,
    fams: &mut Vec<Family>,
) {
    let dbs = crate::pool::database_names(cfg, pools);
    let mut servers_by_db: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    for (p, r) in reports {
        *servers_by_db.entry(p.key.db.as_str()).or_default() += r.servers;
    }
    let gauge = |name: &str, help: &str| Family::new(name, help, GAUGE);
    let mut pool_size = gauge("pgbouncer_databases_pool_size", "Configured pool size.");
    let mut reserve = gauge(
        "pgbouncer_databases_reserve_pool",
        "Configured reserve pool size.",
    );
    let mut current = gauge(
        "pgbouncer_databases_current_connections",
        "Server connections.",
    );
    let mut max = gauge(
        "pgbouncer_databases_max_connections",
        "max_db_connections (0 = unlimited).",
    );
    let mut paused = gauge("pgbouncer_databases_paused", "1 when paused.");
    let mut disabled = gauge("pgbouncer_databases_disabled", "1 when disabled.");
    let s = &cfg.settings;
    for name in &dbs {
        let Some(db) = cfg.database(name) else {
            continue;
        };
        // The exporter's labels, from SHOW DATABASES: `name` is the
        // pooler's database, `database` the server's.
        let host = db
            .cfg
            .host
            .clone()
            .unwrap_or_else(|| s.unix_socket_dir.clone());
        let port = db.cfg.port.first().to_string();
        let force_user = db.cfg.user.clone().unwrap_or_default();
        let mode = db.cfg.pool_mode.map(|m| m.to_string()).unwrap_or_default();
        let l = [
            ("name", name.as_str()),
            ("host", host.as_str()),
            ("port", port.as_str()),
            ("database", db.dbname()),
            ("force_user", force_user.as_str()),
            ("pool_mode", mode.as_str()),
        ];
        pool_size.add(&l, db.cfg.pool_size.unwrap_or(s.default_pool_size) as f64);
        reserve.add(
            &l,
            db.cfg.reserve_pool_size.unwrap_or(s.reserve_pool_size) as f64,
        );
        let servers = servers_by_db.get(name.as_str()).copied().unwrap_or(0);
        current.add(&l, servers as f64);
        max.add(&l, cfg.max_db_connections(&db) as f64);
        paused.add(&l, shared.control.is_paused(name) as u8 as f64);
        disabled.add(&l, shared.control.is_disabled(name) as u8 as f64);
    }
    fams.extend([pool_size, reserve, current, max, paused, disabled]);
}

/// /health: 200 when tidepool accepts clients and no database in use has a
/// recent server login failure; 503 with a JSON reason otherwise. Judged
/// from pool state (the maintenance task probes pools in use), never a new
/// connection per request.
pub fn health(shared: &Shared) -> (StatusCode, String) {
    if shared.control.all_paused() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"paused"}"#.to_string(),
        );
    }
    if shared.control.shutdown_requested().borrow().is_some() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"shutting down"}"#.to_string(),
        );
    }
    let cfg = shared.config();
    let retry = cfg
        .settings
        .server_login_retry
        .0
        .max(std::time::Duration::from_secs(5));
    let mut down: Vec<(String, String)> = Vec::new();
    for p in shared.pools.all() {
        if let Some((e, _)) = p.recent_failure(retry) {
            if !down.iter().any(|(d, _)| *d == p.key.db) {
                down.push((p.key.db.clone(), e.to_string()));
            }
        }
    }
    if down.is_empty() {
        return (StatusCode::OK, r#"{"status":"ok"}"#.to_string());
    }
    down.sort();
    let items: Vec<String> = down
        .iter()
        .map(|(db, why)| {
            format!(
                r#"{{"database":{},"error":{}}}"#,
                crate::logging::json_str(db),
                crate::logging::json_str(why)
            )
        })
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            r#"{{"status":"unreachable","databases":[{}]}}"#,
            items.join(",")
        ),
    )
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render(&shared),
        ),
        "/health" => {
            let (s, b) = health(&shared);
            (s, "application/json", b)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

/// Serve /metrics and /health until `stop` (the final stop: metrics keep
/// answering while the pooler drains).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// Bind `metrics_addr`; `None` when it is empty (disabled).
pub async fn bind(addr: &str) -> std::io::Result<Option<(TcpListener, SocketAddr)>> {
    if addr.trim().is_empty() {
        return Ok(None);
    }
    let l = TcpListener::bind(addr.trim()).await?;
    let local = l.local_addr()?;
    Ok(Some((l, local)))
}
