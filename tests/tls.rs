//! TLS on both sides against a PostgreSQL with ssl = on; certificates are
//! generated per run by the harness (rcgen).

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Output;
use std::sync::Arc;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client_tls(certs: &Certs, mode: &str) -> String {
    format!(
        "client_tls_sslmode = \"{mode}\"\nclient_tls_cert_file = \"{}\"\nclient_tls_key_file = \"{}\"\n",
        certs.path("server.pem"),
        certs.path("server.key")
    )
}

fn psql(conninfo: &str, sql: &str, password: &str) -> Output {
    pg_tls()
        .tool("psql")
        .args(["-X", "-A", "-t", "-d", conninfo, "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verify_full_works_and_plain_text_is_refused() {
    let pg = pg_tls();
    let certs = pg.certs.as_ref().unwrap();
    let p = Pooler::start_on(pg, &client_tls(certs, "require"), "", None).await;
    let base = format!("host=localhost port={} user={MD5_USER} dbname={DB}", p.port);
    let o = psql(
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            certs.path("ca.pem")
        ),
        "SELECT 'tls ok'",
        MD5_PASS,
    );
    assert_eq!(out(&o), "tls ok");
    let o = psql(
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            certs.path("ca.pem")
        ),
        "\\conninfo",
        MD5_PASS,
    );
    assert!(out(&o).contains("SSL connection"), "{}", out(&o));
    // The wrong CA: psql itself refuses tidepool's certificate.
    let o = psql(
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            certs.path("rogue-ca.pem")
        ),
        "SELECT 1",
        MD5_PASS,
    );
    assert!(!o.status.success());
    let o = psql(&format!("{base} sslmode=disable"), "SELECT 1", MD5_PASS);
    assert!(!o.status.success());
    assert!(out(&o).contains("TLS is required"), "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_verify_full_and_a_certificate_from_the_wrong_ca() {
    let pg = pg_tls();
    let certs = pg.certs.as_ref().unwrap();
    let byname = format!("byname = \"host=localhost port={} dbname={DB}\"\n", pg.port);
    let p = Pooler::start_on(
        pg,
        &format!(
            "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"{}\"\n",
            certs.path("ca.pem")
        ),
        &byname,
        None,
    )
    .await;
    for db in [DB, "byname"] {
        let c = p.connect(MD5_USER, MD5_PASS, db).await;
        let row = simple_row(
            &c,
            "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await;
        assert_eq!(row, vec![s("true")], "server connection of {db} uses TLS");
    }
    // A CA that did not sign PostgreSQL's certificate: a clear error.
    let p = Pooler::start_on(
        pg,
        &format!(
            "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"{}\"\n",
            certs.path("rogue-ca.pem")
        ),
        "",
        None,
    )
    .await;
    let e = match connect(&p.conninfo(MD5_USER, MD5_PASS, DB)).await {
        Ok(c) => c.simple_query("SELECT 1").await.expect_err("must fail"),
        Err(e) => e,
    };
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("TLS handshake failed"), "{msg}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    // server_tls_sslmode = disable: plain text to the server.
    let p = Pooler::start_on(pg, "server_tls_sslmode = \"disable\"\n", "", None).await;
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    let row = simple_row(
        &c,
        "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(row, vec![s("false")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_channel_binding_require_works() {
    let pg = pg_tls();
    let certs = pg.certs.as_ref().unwrap();
    let p = Pooler::start_on(
        pg,
        &format!(
            "{}auth_type = \"scram-sha-256\"\n",
            client_tls(certs, "require")
        ),
        "",
        None,
    )
    .await;
    let o = psql(
        &format!(
            "host=localhost port={} user={SCRAM_USER} dbname={DB} sslmode=require channel_binding=require",
            p.port
        ),
        "SELECT 'bound'",
        SCRAM_PASS,
    );
    assert_eq!(out(&o), "bound");
    let o = psql(
        &format!(
            "host=localhost port={} user={SCRAM_USER} dbname={DB} sslmode=require channel_binding=require",
            p.port
        ),
        "SELECT 1",
        "wrong password",
    );
    assert!(
        out(&o).contains("SASL authentication failed"),
        "{}",
        out(&o)
    );
}

/// A rustls client for tidepool's certificate, with or without ALPN.
fn rustls_client(certs: &Certs, alpn: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(certs.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    if alpn {
        cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Arc::new(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_postgresql() {
    let pg = pg_tls();
    let certs = pg.certs.as_ref().unwrap();
    let p = Pooler::start_on(pg, &client_tls(certs, "require"), "", None).await;
    let mut startup = 196608u32.to_be_bytes().to_vec();
    startup.extend_from_slice(format!("user\0{MD5_USER}\0database\0{DB}\0\0").as_bytes());
    let mut msg = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&startup);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    // With ALPN: straight to authentication.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(rustls_client(certs, true))
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    tls.write_all(&msg).await.unwrap();
    let mut first = [0u8; 1];
    tls.read_exact(&mut first).await.unwrap();
    assert_eq!(first[0], b'R', "authentication request");

    // Without ALPN: refused.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    let refused = match tokio_rustls::TlsConnector::from(rustls_client(certs, false))
        .connect(name, tcp)
        .await
    {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(&msg).await;
            let mut buf = Vec::new();
            let _ = tls.read_to_end(&mut buf).await;
            buf.first() != Some(&b'R')
        }
    };
    assert!(refused, "a direct TLS client without ALPN got through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_auth() {
    let pg = pg_tls();
    let certs = pg.certs.as_ref().unwrap();
    let p = Pooler::start_on(
        pg,
        &format!(
            "{}client_tls_ca_file = \"{}\"\nauth_type = \"cert\"\n",
            client_tls(certs, "verify-full"),
            certs.path("ca.pem")
        ),
        "",
        None,
    )
    .await;
    let conn = |cert: &str| {
        format!(
            "host=localhost port={} user={MD5_USER} dbname={DB} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
            p.port,
            certs.path("ca.pem"),
            certs.path(&format!("{cert}.pem")),
            certs.path(&format!("{cert}.key"))
        )
    };
    let o = psql(&conn("client-md5"), "SELECT current_user", "");
    assert_eq!(out(&o), MD5_USER);
    let o = psql(&conn("client-other"), "SELECT 1", "");
    assert!(!o.status.success());
    assert!(out(&o).contains("does not match"), "{}", out(&o));
    // Signed by a CA tidepool does not trust: the handshake fails.
    let o = psql(&conn("client-rogue"), "SELECT 1", "");
    assert!(!o.status.success(), "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_over_rustls() {
    let pg = pg_tls();
    let certs = pg.certs.as_ref().unwrap();
    let p = Pooler::start_on(pg, &client_tls(certs, "require"), "", None).await;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*rustls_client(certs, false)).clone());
    let (c, conn) = tokio_postgres::connect(
        &format!(
            "host=localhost port={} user={SCRAM_USER} password='{}' dbname={DB} sslmode=require",
            p.port,
            SCRAM_PASS.replace('\'', "\\'")
        ),
        tls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let n: i32 = c.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(n, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_after_sslrequest_before_the_handshake_close_the_connection() {
    let pg = pg_tls();
    let certs = pg.certs.as_ref().unwrap();
    let p = Pooler::start_on(pg, &client_tls(certs, "require"), "", None).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    let mut req = 8u32.to_be_bytes().to_vec();
    req.extend_from_slice(&80877103u32.to_be_bytes());
    // A startup packet smuggled in before the TLS handshake.
    req.extend_from_slice(&[0, 0, 0, 8, 0, 3, 0, 0]);
    s.write_all(&req).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("closed, not hung")
        .ok();
    assert_eq!(got, b"S", "the 'S' answer and then nothing: closed");
    // Others are unaffected.
    let o = psql(
        &format!(
            "host=localhost port={} user={MD5_USER} dbname={DB} sslmode=require",
            p.port
        ),
        "SELECT 'still fine'",
        MD5_PASS,
    );
    assert_eq!(out(&o), "still fine");
}
