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

/// verify-full with `ca_file` (a config line, or none): PostgreSQL's test
/// certificate is refused as from an unknown issuer.
async fn refused_by_the_wrong_ca(pg: &Pg, ca_file: &str) {
    let p = Pooler::start_on(
        pg,
        &format!("server_tls_sslmode = \"verify-full\"\n{ca_file}query_wait_timeout = 2\n"),
        "",
        None,
    )
    .await;
    let e = match connect(&p.conninfo(MD5_USER, MD5_PASS, DB)).await {
        Ok(c) => c.simple_query("SELECT 1").await.expect_err("must fail"),
        Err(e) => e,
    };
    assert_eq!(message(&e), "query_wait_timeout");
    let failures: Vec<String> = p
        .app
        .shared()
        .pools
        .all()
        .iter()
        .filter_map(|pool| pool.recent_failure(std::time::Duration::from_secs(600)))
        .map(|(e, _)| e.to_string())
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("TLS handshake failed: certificate verify failed"),
        "{failures:?}"
    );
    assert!(failures[0].contains("UnknownIssuer"), "{failures:?}");
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
    // A CA that did not sign PostgreSQL's certificate (given, or the
    // system's trust store when no CA file is set): the login fails with
    // OpenSSL's words for it, and the client waits for a retry (as with
    // PgBouncer) until query_wait_timeout.
    for ca_file in [
        format!("server_tls_ca_file = \"{}\"\n", certs.path("rogue-ca.pem")),
        String::new(),
    ] {
        refused_by_the_wrong_ca(pg, &ca_file).await;
    }
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

/// Run `openssl` in `dir`; the test needs it to issue X.509 v1
/// certificates (rcgen only issues v3).
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let o = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A CA (v3, as `openssl req -x509` makes it) and v1 certificates it
/// issues: `openssl x509 -req` without extensions, as PgBouncer's own test
/// certificates and many hand-made PKIs are.
fn v1_pki(dir: &std::path::Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-out",
                &format!("{ca}.key"),
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-x509",
                "-days",
                "30",
                "-key",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-subj",
                &format!("/CN={ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
            ],
        );
    }
    for (name, cn, ca) in [
        ("site", "localhost", "ca"),
        ("client", "alice", "ca"),
        ("rogue", "localhost", "other-ca"),
    ] {
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-out",
                &format!("{name}.key"),
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "10",
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }
}

/// tidepool's TLS of `settings` (relative to `dir`) on both ends of one
/// in-memory connection: its client side accepting, its server side
/// connecting to `host`. The connecting side's error, if any.
async fn handshake(
    dir: &std::path::Path,
    settings: &[(&str, &str)],
    host: &str,
) -> Result<(), String> {
    let mut s = tidepool::config::Settings::default();
    for (k, v) in settings {
        s.set(k, v).unwrap();
    }
    let ctx = tidepool::tls::load(&s, dir).map_err(|e| e.to_string())?;
    let acceptor = ctx.client.as_ref().expect("client TLS").acceptor.clone();
    let connector = ctx.server.connector.clone().expect("server TLS");
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let (accepted, connected) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
    let mut tls = connected.map_err(|e| e.to_string())?;
    let mut served = accepted.map_err(|e| e.to_string())?;
    // The TLS 1.3 client's certificate is checked after the handshake:
    // a byte through both ways proves both sides accepted.
    tls.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    served
        .read_exact(&mut one)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// X.509 v1 end-entity certificates are accepted where the configured CA
/// issued them: tidepool's own certificate, a client's certificate, and
/// PostgreSQL's under verify-full (name from the CN). Another CA's, or
/// another name under verify-full, is refused.
#[tokio::test]
async fn x509_v1_certificates_of_the_configured_ca() {
    let d = tempfile::tempdir().unwrap();
    v1_pki(d.path());
    let both = |ours: &'static str| {
        vec![
            ("client_tls_sslmode", "verify-full"),
            (
                "client_tls_cert_file",
                if ours == "site" {
                    "site.crt"
                } else {
                    "rogue.crt"
                },
            ),
            (
                "client_tls_key_file",
                if ours == "site" {
                    "site.key"
                } else {
                    "rogue.key"
                },
            ),
            ("client_tls_ca_file", "ca.crt"),
            ("server_tls_sslmode", "verify-full"),
            ("server_tls_ca_file", "ca.crt"),
            ("server_tls_cert_file", "client.crt"),
            ("server_tls_key_file", "client.key"),
        ]
    };
    handshake(d.path(), &both("site"), "localhost")
        .await
        .expect("v1 on both sides");
    let e = handshake(d.path(), &both("site"), "elsewhere")
        .await
        .unwrap_err();
    assert!(e.contains("NotValidForName"), "{e}");
    let e = handshake(d.path(), &both("rogue"), "localhost")
        .await
        .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    // verify-ca: the name is not checked, the issuer is.
    let mut ca_only = both("site");
    ca_only[4] = ("server_tls_sslmode", "verify-ca");
    handshake(d.path(), &ca_only, "elsewhere")
        .await
        .expect("verify-ca ignores the name");
    // A client certificate from another CA is refused by tidepool.
    let mut rogue_client = both("site");
    rogue_client[6] = ("server_tls_cert_file", "rogue.crt");
    rogue_client[7] = ("server_tls_key_file", "rogue.key");
    let e = handshake(d.path(), &rogue_client, "localhost")
        .await
        .unwrap_err();
    assert!(!e.is_empty(), "{e}");
    eprintln!("rogue client: {e}");
}

/// `SET client_tls_*` / `server_tls_*` on the console take effect at once,
/// as RELOAD does: client TLS comes on; a server TLS change closes the old
/// servers once released; files that cannot be used leave the TLS in force
/// with PgBouncer's NOTICE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_set_applies_tls_settings() {
    let pg = pg_tls();
    let certs = pg.certs.as_ref().unwrap();
    let p = Pooler::start_on(
        pg,
        &format!("server_tls_sslmode = \"disable\"\nadmin_users = \"{MD5_USER}\"\n"),
        "",
        None,
    )
    .await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let base = format!("host=localhost port={} user={MD5_USER} dbname={DB}", p.port);
    let tls_row = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    assert_eq!(simple_row(&c, tls_row).await, vec![s("false")]);
    let before = simple_row(&c, "SELECT pg_backend_pid()::text").await;
    for (k, v) in [
        ("client_tls_cert_file", certs.path("server.pem")),
        ("client_tls_key_file", certs.path("server.key")),
        ("client_tls_sslmode", "require".into()),
        ("server_tls_sslmode", "require".into()),
    ] {
        admin
            .simple_query(&format!("SET {k} = '{v}'"))
            .await
            .unwrap();
    }
    let o = psql(&format!("{base} sslmode=require"), "SHOW ssl", MD5_PASS);
    assert!(o.status.success(), "{}", out(&o));
    // A session keeps its server (session mode) ...
    assert_eq!(
        simple_row(&c, "SELECT pg_backend_pid()::text").await,
        before
    );
    // ... which is closed at its end, not reused: the next client's
    // server is a new one, over TLS.
    drop(c);
    // (Over the Unix socket: TCP now needs TLS.)
    let c = connect(&format!(
        "host={} port={} user={MD5_USER} password={MD5_PASS} dbname={DB}",
        p.dir.path().display(),
        p.port
    ))
    .await
    .unwrap();
    assert_eq!(simple_row(&c, tls_row).await, vec![s("true")]);
    assert_ne!(
        simple_row(&c, "SELECT pg_backend_pid()::text").await,
        before
    );
    // A key file that does not exist: set, not applied, TLS goes on.
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (admin2, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user={MD5_USER} password={MD5_PASS} dbname=pgbouncer",
            p.dir.path().display(),
            p.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let seen = notices.clone();
    let listening = tokio::spawn(async move {
        let mut conn = conn;
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = m {
                seen.lock().unwrap().push(n.message().to_string());
            }
        }
    });
    admin2
        .simple_query("SET client_tls_key_file = '/nonexistent/key.pem'")
        .await
        .unwrap();
    assert_eq!(
        notices.lock().unwrap().as_slice(),
        ["TLS settings could not be applied, still using old configuration"]
    );
    let o = psql(&format!("{base} sslmode=require"), "SHOW ssl", MD5_PASS);
    assert!(o.status.success(), "{}", out(&o));
    drop(admin2);
    listening.await.unwrap();
}
