//! The live `tidepool_*` metrics: histograms and counters that sessions
//! update as they go (they hold their label handles, so the hot path only
//! does atomic adds). `exporter` serves them with the `pgbouncer_*`
//! families built at scrape time.

use crate::sync::Locked;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Latency buckets, seconds: 100 µs to 60 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The live `tidepool_*` metrics.
pub struct Metrics {
    pub(crate) registry: Registry,
    pub client_wait: HistogramVec,
    pub query_duration: HistogramVec,
    pub xact_duration: HistogramVec,
    pub server_connect: HistogramVec,
    pub errors: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub checkouts: IntCounterVec,
    pub reloads: IntCounter,
    /// One set of per-database handles, shared by that database's sessions.
    per_db: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<DbMetrics>>>,
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
    let _ = r.register(Box::new(h.clone()));
    h
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        let reloads = IntCounter::new("tidepool_reloads_total", "Configuration reloads applied.")
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let _ = r.register(Box::new(reloads.clone()));
        Metrics {
            client_wait: histogram(
                &r,
                "tidepool_client_wait_seconds",
                "Time clients waited for a server connection.",
                &["database"],
            ),
            query_duration: histogram(
                &r,
                "tidepool_query_duration_seconds",
                "Time from a query to its ReadyForQuery.",
                &["database"],
            ),
            xact_duration: histogram(
                &r,
                "tidepool_transaction_duration_seconds",
                "Time from a transaction's first query to ReadyForQuery idle.",
                &["database"],
            ),
            server_connect: histogram(
                &r,
                "tidepool_server_connect_seconds",
                "Time to connect and log into a server.",
                &["database"],
            ),
            errors: counter(
                &r,
                "tidepool_errors_total",
                "Errors by side (client / server / internal) and SQLSTATE class.",
                &["side", "class"],
            ),
            tls_handshakes: counter(
                &r,
                "tidepool_tls_handshakes_total",
                "TLS handshakes completed, by side.",
                &["side"],
            ),
            checkouts: counter(
                &r,
                "tidepool_pool_checkouts_total",
                "Server connections handed to clients.",
                &["database"],
            ),
            reloads,
            registry: r,
            per_db: Default::default(),
        }
    }
}

/// A session's handles into the per-database metrics (looked up once).
#[derive(Clone)]
pub struct DbMetrics {
    pub client_wait: prometheus::Histogram,
    pub query_duration: prometheus::Histogram,
    pub xact_duration: prometheus::Histogram,
    pub checkouts: prometheus::IntCounter,
}

impl Metrics {
    /// The handles for `db`, made once and shared: a session holds one
    /// pointer, not four.
    pub fn db(&self, db: &str) -> std::sync::Arc<DbMetrics> {
        let mut map = self.per_db.locked();
        if let Some(m) = map.get(db) {
            return m.clone();
        }
        let m = std::sync::Arc::new(DbMetrics {
            client_wait: self.client_wait.with_label_values(&[db]),
            query_duration: self.query_duration.with_label_values(&[db]),
            xact_duration: self.xact_duration.with_label_values(&[db]),
            checkouts: self.checkouts.with_label_values(&[db]),
        });
        map.insert(db.to_string(), m.clone());
        m
    }

    /// Count an error by side and SQLSTATE class (its first two characters).
    pub fn error(&self, e: &crate::Error) {
        let side = match e.side() {
            crate::Side::Client => "client",
            crate::Side::Server => "server",
            crate::Side::Internal => "internal",
        };
        let code = e.sqlstate();
        let class = code.get(..2).unwrap_or("XX");
        self.errors.with_label_values(&[side, class]).inc();
    }
}
