//! End-to-end: LDAP logins (auth_type = ldap, HBA `ldap` lines) against a
//! real OpenLDAP server (Debian's slapd) that each test starts on free
//! loopback ports, with ldap:// and ldaps:// listeners, in front of the
//! real PostgreSQL. The option parser itself is unit-tested in
//! `auth::ldap`.

#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const BASE: &str = "dc=example,dc=net";
/// The directory's administrator (a search user for ldapbinddn).
const ADMIN_DN: &str = "cn=admin,dc=example,dc=net";
const ADMIN_PW: &str = "admin-Secret-42";

/// A slapd for one test, killed when dropped.
struct Slapd {
    _child: Running,
    port: u16,
    tls_port: u16,
    dir: tempfile::TempDir,
}

/// Whether slapd is here; without it the test is skipped, unless
/// scripts/test.sh (which installs it) runs the suite.
fn have_slapd() -> bool {
    let have = Path::new(SLAPD).exists() && Path::new("/etc/ldap/schema/core.schema").exists();
    if !have {
        assert!(
            std::env::var_os("TIDEPOOL_REQUIRE_TOOLS").is_none(),
            "slapd missing (scripts/test.sh installs it)"
        );
        eprintln!("slapd not installed: skipped (apt-get install slapd)");
    }
    have
}

impl Slapd {
    /// A directory holding `users` (uid, password) under ou=people, with a
    /// mail attribute each, and TLS with the test CA's server certificate.
    async fn start(users: &[(&str, &str)]) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let certs = Certs::generate(&d.join("certs"));
        std::fs::create_dir(d.join("data")).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {d}/slapd.pid\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by * read\n\
             database ldif\n\
             directory {d}/data\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PW}\n",
            d = d.display(),
            cert = certs.path("server.pem"),
            key = certs.path("server.key"),
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let mut ldif = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n"
        );
        for (uid, pw) in users {
            ldif.push_str(&format!(
                "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
                 sn: {uid}\ncn: {uid}\nmail: {uid}@example.net\nuserPassword: {pw}\n\n"
            ));
        }
        std::fs::write(d.join("data.ldif"), ldif).unwrap();
        let added = Command::new(SLAPADD)
            .args(["-f", &d.join("slapd.conf").display().to_string()])
            .args(["-l", &d.join("data.ldif").display().to_string()])
            .output()
            .unwrap();
        assert!(added.status.success(), "slapadd: {added:?}");
        let (port, tls_port) = (free_port(), free_port());
        // -d keeps slapd in the foreground, so the test owns the process.
        let child = Running(
            Command::new(SLAPD)
                .args(["-f", &d.join("slapd.conf").display().to_string()])
                .args([
                    "-h",
                    &format!("ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"),
                ])
                .args(["-d", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        assert!(
            accepts(port).await && accepts(tls_port).await,
            "slapd did not start"
        );
        Slapd {
            _child: child,
            port,
            tls_port,
            dir,
        }
    }

    fn ca(&self, name: &str) -> PathBuf {
        self.dir.path().join("certs").join(name)
    }
}

/// PostgreSQL roles with the same passwords as the directory's users
/// (servers log in with the password LDAP accepted).
async fn make_roles(users: &[(&str, &str)]) {
    let su = pg().direct("postgres").await;
    for (u, pw) in users {
        su.batch_execute(&format!(
            "DROP ROLE IF EXISTS {u}; CREATE ROLE {u} LOGIN PASSWORD '{pw}'"
        ))
        .await
        .unwrap();
    }
}

/// A pooler whose HBA file is `line` for every TCP client.
async fn hba_pooler(line: &str) -> Pooler {
    hba_pooler_with(line, "").await
}

/// As [`hba_pooler`], with `databases` entries too.
async fn hba_pooler_with(line: &str, databases: &str) -> Pooler {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("hba.conf"), format!("{line}\n")).unwrap();
    // As the binary runs (event loops without timers): LDAP's timeouts
    // must be tidepool's own.
    Pooler::start_as_binary(
        &format!(
            "auth_type = \"hba\"\nauth_hba_file = \"{}\"\npool_mode = \"transaction\"",
            dir.join("hba.conf").display()
        ),
        databases,
        1,
    )
    .await
}

async fn current_user(p: &Pooler, user: &str, pw: &str) -> Result<String, tokio_postgres::Error> {
    let c = connect(&p.conninfo(user, pw, DB)).await?;
    Ok(c.query_one("SELECT current_user::text", &[]).await?.get(0))
}

/// The client's view of a refused LDAP login.
fn assert_refused(r: Result<String, tokio_postgres::Error>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(sqlstate(&e), "28000", "{what}: {e}");
    assert_eq!(message(&e), "LDAP authentication failed", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_naming_the_user_logs_in_through_the_directory() {
    if !have_slapd() {
        return;
    }
    let users = [("ldap_a1", "secret-a1"), ("ldap_a2", "secret-a2")];
    make_roles(&users).await;
    let ldap = Slapd::start(&users).await;
    let port = ldap.port;
    let modes = [
        // Simple bind: prefix + user + suffix.
        format!(
            "ldapserver=127.0.0.1 ldapport={port} ldapprefix=\"uid=\" ldapsuffix=\",ou=people,{BASE}\""
        ),
        // Search+bind, anonymous search for uid.
        format!("ldapserver=127.0.0.1 ldapport={port} ldapbasedn=\"{BASE}\""),
        // Search+bind as a search user, another attribute.
        format!(
            "ldapserver=\"127.0.0.2 127.0.0.1\" ldapport={port} ldapbasedn=\"{BASE}\" \
             ldapbinddn=\"{ADMIN_DN}\" ldapbindpasswd=\"{ADMIN_PW}\" ldapsearchattribute=cn"
        ),
        // A filter of our own.
        format!(
            "ldapserver=127.0.0.1 ldapport={port} ldapbasedn=\"{BASE}\" ldapsearchfilter=\"(|(uid=$username)(mail=$username))\""
        ),
        // LDAP URLs.
        format!("ldapurl=\"ldap://127.0.0.1:{port}/{BASE}?uid?sub\""),
        format!("ldapurl=\"ldap://127.0.0.1:{port}/{BASE}??sub?(|(uid=$username)(mail=$username))\""),
    ];
    for opts in modes {
        let p = hba_pooler(&format!("host all all 127.0.0.1/32 ldap {opts}")).await;
        for (u, pw) in users {
            assert_eq!(
                current_user(&p, u, pw)
                    .await
                    .unwrap_or_else(|e| panic!("{opts}: {u}: {e}")),
                u,
                "{opts}: servers log in as the user, with the password LDAP accepted"
            );
        }
        assert_refused(current_user(&p, "ldap_a1", "secret-a2").await, &opts);
        assert_refused(current_user(&p, "nobody_here", "x").await, &opts);
    }
}

/// As PgBouncer: an LDAP login to a database with its own auth_user is
/// refused (`bouncer config error`), before any password is asked; the
/// other databases log in through the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_and_a_database_auth_user_do_not_mix() {
    if !have_slapd() {
        return;
    }
    let users = [("ldap_m1", "secret-m1")];
    make_roles(&users).await;
    let ldap = Slapd::start(&users).await;
    let opts = format!(
        "ldapserver=127.0.0.1 ldapport={} ldapbasedn=\"{BASE}\"",
        ldap.port
    );
    let p = hba_pooler_with(
        &format!("host all all 127.0.0.1/32 ldap {opts}"),
        &format!(
            "looked_up = \"host=127.0.0.1 port={} dbname={DB} auth_user={SUPERUSER}\"\n",
            pg().port
        ),
    )
    .await;
    let (u, pw) = users[0];
    let e = connect(&p.conninfo(u, pw, "looked_up"))
        .await
        .expect_err("refused");
    assert_eq!(message(&e), "bouncer config error", "{e}");
    assert_eq!(
        current_user(&p, u, pw).await.unwrap(),
        u,
        "other databases log in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_finds_exactly_one_entry_or_refuses() {
    if !have_slapd() {
        return;
    }
    let users = [("ldap_b1", "secret-b1")];
    make_roles(&users).await;
    let ldap = Slapd::start(&users).await;
    let port = ldap.port;
    // A scope of the base entry alone finds no user under ou=people.
    let p = hba_pooler(&format!(
        "host all all 127.0.0.1/32 ldap ldapurl=\"ldap://127.0.0.1:{port}/{BASE}?uid\""
    ))
    .await;
    assert_refused(current_user(&p, "ldap_b1", "secret-b1").await, "base scope");
    // objectClass matches every entry: not unique.
    let p = hba_pooler(&format!(
        "host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={port} ldapbasedn=\"{BASE}\" ldapsearchfilter=\"(objectClass=*)\""
    ))
    .await;
    assert_refused(current_user(&p, "ldap_b1", "secret-b1").await, "not unique");
    // A user name that would change the filter is refused before any search.
    let p = hba_pooler(&format!(
        "host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={port} ldapbasedn=\"{BASE}\""
    ))
    .await;
    assert_refused(
        current_user(&p, "ldap_b1)(uid=*", "secret-b1").await,
        "filter injection",
    );
    // A wrong search password: refused.
    let p = hba_pooler(&format!(
        "host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={port} ldapbasedn=\"{BASE}\" ldapbinddn=\"{ADMIN_DN}\" ldapbindpasswd=wrong"
    ))
    .await;
    assert_refused(
        current_user(&p, "ldap_b1", "secret-b1").await,
        "search bind",
    );
    // An empty password would be an anonymous bind, which LDAP accepts.
    let p = hba_pooler(&format!(
        "host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={port} ldapprefix=\"uid=\" ldapsuffix=\",ou=people,{BASE}\""
    ))
    .await;
    let e = current_user(&p, "ldap_b1", "")
        .await
        .expect_err("empty password");
    assert_eq!(sqlstate(&e), "28000", "{e}");
    // A server that is down: refused, not hung.
    drop(ldap);
    assert_refused(
        current_user(&p, "ldap_b1", "secret-b1").await,
        "server down",
    );
}

/// Spawn the binary with `config` in `dir`, `LDAPCONF` pointing at
/// `ldap_conf`; wait until it accepts on `port`.
async fn binary_with_ldap_conf(dir: &Path, config: &str, ldap_conf: &str, port: u16) -> Running {
    std::fs::write(dir.join("ldap.conf"), ldap_conf).unwrap();
    std::fs::write(dir.join("t.ini"), config).unwrap();
    // LDAPTLS_* set empty: ldap.conf alone decides.
    let conf = dir.join("ldap.conf");
    let empty = std::ffi::OsStr::new("");
    let child = run_binary(
        &dir.join("t.ini"),
        &[
            ("LDAPCONF", conf.as_os_str()),
            ("LDAPTLS_REQCERT", empty),
            ("LDAPTLS_CACERT", empty),
        ],
    );
    assert!(accepts(port).await, "tidepool did not start");
    child
}

/// A pgbouncer.ini with auth_type = ldap and `options`.
fn ldap_ini(dir: &Path, port: u16, options: &str, extra: &str) -> String {
    std::fs::write(
        dir.join("users.txt"),
        format!("\"{MD5_USER}\" \"{MD5_PASS}\"\n"),
    )
    .unwrap();
    format!(
        "[databases]\n{DB} = host=127.0.0.1 port={pg} dbname={DB}\n\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nmetrics_addr =\n\
         auth_file = {users}\nadmin_users = {MD5_USER}\nauth_type = ldap\nauth_ldap_options = {options}\n{extra}\n",
        pg = pg().port,
        users = dir.join("users.txt").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_and_starttls_check_the_directory_certificate_as_ldap_conf_says() {
    if !have_slapd() {
        return;
    }
    let users = [("ldap_c1", "secret-c1")];
    make_roles(&users).await;
    let ldap = Slapd::start(&users).await;
    let (plain, tls) = (ldap.port, ldap.tls_port);
    let good_ca = ldap.ca("ca.pem").display().to_string();
    let rogue_ca = ldap.ca("rogue-ca.pem").display().to_string();
    let simple = format!("ldapprefix=\"uid=\" ldapsuffix=\",ou=people,{BASE}\"");
    // (options, ldap.conf, logs in)
    let cases = [
        (
            format!("ldapurl=\"ldaps://127.0.0.1:{tls}/{BASE}?uid?sub\""),
            format!("TLS_CACERT {good_ca}\n"),
            true,
        ),
        (
            format!("ldapserver=127.0.0.1 ldapport={plain} ldaptls=1 {simple}"),
            format!("TLS_CACERT {good_ca}\n"),
            true,
        ),
        (
            format!("ldapserver=127.0.0.1 ldapscheme=ldaps ldapport={tls} {simple}"),
            format!("TLS_CACERT {good_ca}\n"),
            true,
        ),
        // A CA that did not sign the directory's certificate.
        (
            format!("ldapurl=\"ldaps://127.0.0.1:{tls}/{BASE}?uid?sub\""),
            format!("TLS_CACERT {rogue_ca}\n"),
            false,
        ),
        (
            format!("ldapserver=127.0.0.1 ldapport={plain} ldaptls=1 {simple}"),
            format!("TLS_CACERT {rogue_ca}\n"),
            false,
        ),
        // ... unless ldap.conf says not to check.
        (
            format!("ldapserver=127.0.0.1 ldapport={plain} ldaptls=1 {simple}"),
            format!("TLS_CACERT {rogue_ca}\nTLS_REQCERT never\n"),
            true,
        ),
        // TLS against the plain port, StartTLS against the TLS port.
        (
            format!("ldapurl=\"ldaps://127.0.0.1:{plain}/{BASE}?uid?sub\""),
            "TLS_REQCERT never\n".to_string(),
            false,
        ),
        (
            format!("ldapserver=127.0.0.1 ldapport={tls} ldaptls=1 {simple}"),
            "TLS_REQCERT never\n".to_string(),
            false,
        ),
        // StartTLS inside TLS: refused, as libldap does.
        (
            format!("ldapurl=\"ldaps://127.0.0.1:{tls}/{BASE}?uid?sub\" ldaptls=1"),
            "TLS_REQCERT never\n".to_string(),
            false,
        ),
    ];
    for (opts, conf, ok) in cases {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let ini = ldap_ini(dir.path(), port, &opts, "");
        let _pooler = binary_with_ldap_conf(dir.path(), &ini, &conf, port).await;
        let info = format!(
            "host=127.0.0.1 port={port} user=ldap_c1 password=secret-c1 dbname={DB} connect_timeout=20"
        );
        let r = match connect(&info).await {
            Ok(c) => c
                .query_one("SELECT current_user::text", &[])
                .await
                .map(|r| r.get::<_, String>(0)),
            Err(e) => Err(e),
        };
        if ok {
            assert_eq!(
                r.unwrap_or_else(|e| panic!("{opts} / {conf}: {e}")),
                "ldap_c1"
            );
        } else {
            assert_refused(r, &format!("{opts} / {conf}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_reach_neither_the_log_nor_show_config() {
    if !have_slapd() {
        return;
    }
    let users = [("ldap_d1", "Secret-D1-xyz")];
    make_roles(&users).await;
    let ldap = Slapd::start(&users).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("tidepool.log");
    let opts = format!(
        "ldapserver=127.0.0.1 ldapport={} ldapbasedn=\"{BASE}\" ldapbinddn=\"{ADMIN_DN}\" ldapbindpasswd=\"{ADMIN_PW}\"",
        ldap.port
    );
    let ini = ldap_ini(
        dir.path(),
        port,
        &opts,
        &format!(
            "logfile = {}\nverbose = 3\nlog_connections = 1\nadmin_users = ldap_d1",
            log.display()
        ),
    );
    let _pooler = binary_with_ldap_conf(dir.path(), &ini, "", port).await;
    let info = |user: &str, pw: &str| {
        format!("host=127.0.0.1 port={port} user={user} password={pw} dbname={DB}")
    };
    let c = connect(&info("ldap_d1", "Secret-D1-xyz")).await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    let e = connect(&info("ldap_d1", "Wrong-D1-abc"))
        .await
        .err()
        .unwrap();
    assert_eq!(message(&e), "LDAP authentication failed");
    // The console: its admins log in through LDAP too.
    let console = connect(&format!(
        "host=127.0.0.1 port={port} user=ldap_d1 password=Secret-D1-xyz dbname=pgbouncer"
    ))
    .await
    .unwrap();
    let shown: Vec<String> = console
        .simple_query("SHOW CONFIG")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(format!(
                "{}={}",
                r.get(0).unwrap_or(""),
                r.get(1).unwrap_or("")
            )),
            _ => None,
        })
        .collect();
    let row = shown
        .iter()
        .find(|r| r.starts_with("auth_ldap_options="))
        .expect("auth_ldap_options in SHOW CONFIG");
    assert!(row.contains("ldapbindpasswd=<redacted>"), "{row}");
    assert!(!shown.iter().any(|r| r.contains(ADMIN_PW)), "{shown:?}");
    drop(c);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("LDAP login failed for user"), "{text}");
    for secret in ["Secret-D1-xyz", "Wrong-D1-abc", ADMIN_PW] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
}
