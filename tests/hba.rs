//! End-to-end: `auth_type = hba` (PgBouncer's HBA file and ident maps)
//! against a real PostgreSQL: TCP and Unix socket clients, md5, reject,
//! peer with a map, and a reload that keeps the old file when the new one
//! is bad. The decision table itself is unit-tested in `auth::hba`.

#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

/// The OS user this test runs as (the peer a Unix socket client is).
fn os_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn pooler(hba: &str, ident: &str) -> Pooler {
    pooler_in(&tempfile::tempdir().unwrap().keep(), hba, ident).await
}

async fn pooler_in(dir: &std::path::Path, hba: &str, ident: &str) -> Pooler {
    std::fs::write(dir.join("hba.conf"), hba).unwrap();
    std::fs::write(dir.join("ident.conf"), ident).unwrap();
    let settings = format!(
        "auth_type = \"hba\"\nauth_hba_file = \"{}\"\nauth_ident_file = \"{}\"\nadmin_users = \"{MD5_USER}\"\n",
        dir.join("hba.conf").display(),
        dir.join("ident.conf").display()
    );
    Pooler::start(&settings, "").await
}

fn unix_conninfo(p: &Pooler, user: &str, password: &str) -> String {
    format!(
        "host={} port={} user={user} password='{}' dbname={DB}",
        p.dir.path().display(),
        p.port,
        password.replace('\'', "\\'")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_line_decides() {
    let hba = format!(
        "# md5 over TCP for one user, nobody else\n\
         host  all {MD5_USER}  127.0.0.1/32 md5\n\
         host  all all         127.0.0.1/32 reject\n\
         local all {SCRAM_USER} peer map=local\n"
    );
    let ident = format!("local {} {SCRAM_USER}\n", os_user());
    let p = pooler(&hba, &ident).await;
    // Line 2: md5.
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    assert_eq!(simple_row(&c, "SELECT 1").await, vec![s("1")]);
    // A wrong password is still refused on that line.
    let e = connect(&p.conninfo(MD5_USER, "nope", DB))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    // Line 3: reject, with the right password too; told as a wrong SCRAM
    // password is, after a password exchange, so that a client cannot
    // tell a refusal from a wrong password.
    let e = connect(&p.conninfo(SCRAM_USER, SCRAM_PASS, DB))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    assert_eq!(message(&e), "SASL authentication failed");
    // Line 4: peer over the Unix socket; the map lets this OS user in as
    // scram_user, with no password asked.
    let c = connect(&unix_conninfo(&p, SCRAM_USER, "not asked"))
        .await
        .expect("peer login through the map");
    let row = simple_row(&c, "SELECT current_user").await;
    assert_eq!(row, vec![s(SCRAM_USER)]);
    // No line for md5_user over the socket: refused.
    let e = connect(&unix_conninfo(&p, MD5_USER, MD5_PASS))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    assert_eq!(message(&e), "SASL authentication failed", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_looks_like_a_wrong_password() {
    let p = pooler(
        &format!(
            "host all {MD5_USER} 127.0.0.1/32 reject
             host all {SCRAM_USER},nobody_here 127.0.0.1/32 scram-sha-256
"
        ),
        "",
    )
    .await;
    let refused = |user: &'static str, pw: &'static str| {
        let info = p.conninfo(user, pw, DB);
        async move {
            let e = connect(&info).await.unwrap_err();
            (sqlstate(&e), message(&e))
        }
    };
    let wrong = refused(SCRAM_USER, "not the password").await;
    assert_eq!(wrong, ("28P01".into(), "SASL authentication failed".into()));
    assert_eq!(refused("nobody_here", "x").await, wrong, "unknown user");
    assert_eq!(refused(MD5_USER, MD5_PASS).await, wrong, "a reject line");
    assert_eq!(refused("no_line_for_me", "x").await, wrong, "no line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_a_map_needs_the_os_user_name() {
    let p = pooler("local all all peer\n", "").await;
    // The OS user is not scram_user: refused.
    let e = connect(&unix_conninfo(&p, SCRAM_USER, SCRAM_PASS))
        .await
        .unwrap_err();
    assert_eq!(message(&e), "unix socket login rejected", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_hba_file_on_reload_keeps_the_old_one() {
    let hba = format!("host all {MD5_USER} 127.0.0.1/32 md5\n");
    let dir = tempfile::tempdir().unwrap().keep();
    let p = pooler_in(&dir, &hba, "").await;
    let admin = p.connect(MD5_USER, MD5_PASS, "pgbouncer").await;
    let file = dir.join("hba.conf");
    std::fs::write(
        &file,
        "host all all 127.0.0.1/32 trust\nhost all all nowhere md5\n",
    )
    .unwrap();
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    let text = message(&e);
    assert!(text.contains(":2:") && text.contains("nowhere"), "{text}");
    // The old file still decides: md5, not the new trust line.
    let e = connect(&p.conninfo(MD5_USER, "nope", DB))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
}
