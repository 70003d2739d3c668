//! SCRAM-SHA-256 verification: what tidepool pays per client login.
//!
//! `server side, one login` is the server half of an exchange (parse the
//! client-first message, build server-first, check the proof, derive the
//! ClientKey); the client half is run with ClientKey creds, so no PBKDF2 is
//! in the loop. `derive secret` is the PBKDF2 a `plain` userlist password
//! costs once (4096 iterations, PostgreSQL's default), shown for scale.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use tidepool::auth::scram::{ClientCreds, ScramClient, ScramSecret, ScramServer};

fn bench(c: &mut Criterion) {
    let secret = ScramSecret::generate("bench password", 4096);
    let creds = ClientCreds::Keys {
        client_key: {
            // Recover the ClientKey once, as tidepool does from a proof.
            let mut cl = ScramClient::new(ClientCreds::Password("bench password".into()));
            let mut sv = ScramServer::new(secret.clone());
            let sf = sv.client_first(&cl.client_first()).expect("client-first");
            let cf = cl.server_first(&sf).expect("server-first");
            sv.client_final(&cf).expect("proof").client_key
        },
        server_key: secret.server_key,
    };
    c.bench_function("SCRAM server side, one login", |b| {
        b.iter_batched(
            || {
                // The client's messages, made outside the timed part.
                let mut cl = ScramClient::new(creds.clone());
                let mut probe = ScramServer::new(secret.clone());
                let first = cl.client_first();
                let sf = probe.client_first(&first).expect("client-first");
                let cf = cl.server_first(&sf).expect("server-first");
                (probe, cf)
            },
            |(mut server, cf)| server.client_final(&cf).expect("valid proof"),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("SCRAM server side, whole exchange", |b| {
        b.iter(|| {
            let mut cl = ScramClient::new(creds.clone());
            let mut sv = ScramServer::new(secret.clone());
            let sf = sv.client_first(&cl.client_first()).expect("client-first");
            let cf = cl.server_first(&sf).expect("server-first");
            sv.client_final(&cf).expect("valid proof")
        })
    });
    c.bench_function("SCRAM derive secret (PBKDF2, 4096)", |b| {
        b.iter(|| ScramSecret::generate(std::hint::black_box("bench password"), 4096))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
