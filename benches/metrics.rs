//! Scrape cost: rendering /metrics with 1,000 pools (100 databases x 10
//! users) and their counters. The target is well under 10 ms per scrape.

use criterion::{criterion_group, criterion_main, Criterion};
use tidepool::config::Config;
use tidepool::pool::PoolKey;
use tidepool::stats::C;
use tidepool::Shared;

fn bench(c: &mut Criterion) {
    let cfg = Config::default();
    let tls = tidepool::tls::load(&cfg.settings, std::path::Path::new("/")).expect("default TLS");
    let shared = Shared::new(cfg, tls, tidepool::threads::Timers::current());
    for d in 0..100 {
        let db = format!("db{d}");
        shared.stats.db(&db).add(C::Queries, 1000 + d);
        let m = shared.metrics.db(&db);
        m.query_duration.observe(0.001);
        m.xact_duration.observe(0.002);
        for u in 0..10 {
            shared.pools.get(&PoolKey {
                db: db.clone(),
                user: format!("user{u}"),
            });
        }
    }
    assert_eq!(shared.pools.all().len(), 1000);
    c.bench_function("render /metrics, 1000 pools", |b| {
        b.iter(|| tidepool::exporter::render(std::hint::black_box(&shared)).len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
