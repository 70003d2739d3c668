//! auth_user + auth_query, in the style of fly.io's postgres images: the
//! auth_file holds only the auth user, every other role is looked up in
//! PostgreSQL at login.

// Test runtimes have a timer driver; the lint keeps `tokio::time` out of
// src/, whose event loops have none (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

/// Roles made for this file only, so runs in parallel do not meet.
async fn make_roles(prefix: &str, n: usize) {
    let su = pg().direct("postgres").await;
    for i in 0..n {
        su.batch_execute(&format!(
            "DROP ROLE IF EXISTS {prefix}{i}; CREATE ROLE {prefix}{i} LOGIN PASSWORD 'pw{i}'"
        ))
        .await
        .unwrap();
    }
}

async fn start() -> Pooler {
    let userlist = format!("\"{SUPERUSER}\" \"{SUPERPASS}\"\n");
    Pooler::start_with_userlist(
        &format!("pool_mode = \"transaction\"\nauth_user = \"{SUPERUSER}\"\nauth_type = \"scram-sha-256\""),
        "",
        Some(userlist),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_logins_of_twenty_looked_up_roles_all_succeed() {
    make_roles("aq_many_", 20).await;
    let p = start().await;
    let mut tasks = Vec::new();
    for n in 0..50 {
        let i = n % 20;
        let info = p.conninfo(&format!("aq_many_{i}"), &format!("pw{i}"), DB);
        tasks.push(tokio::spawn(async move {
            let c = connect(&info)
                .await
                .map_err(|e| format!("login {n}: {e}"))?;
            let row = c
                .query_one("SELECT current_user::text", &[])
                .await
                .map_err(|e| format!("query {n}: {e}"))?;
            Ok::<String, String>(row.get(0))
        }));
    }
    for (n, t) in tasks.into_iter().enumerate() {
        let user = t.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            user,
            format!("aq_many_{}", n % 20),
            "servers log in as the client"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looked_up_secrets_follow_postgresql() {
    make_roles("aq_change_", 3).await;
    let p = start().await;
    // A wrong password, an unknown role and a role with no password are
    // refused alike.
    let wrong = connect(&p.conninfo("aq_change_0", "nope", DB))
        .await
        .unwrap_err();
    let unknown = connect(&p.conninfo("aq_nobody", "pw0", DB))
        .await
        .unwrap_err();
    let su = pg().direct("postgres").await;
    su.batch_execute("ALTER ROLE aq_change_2 PASSWORD NULL")
        .await
        .unwrap();
    let nopass = connect(&p.conninfo("aq_change_2", "pw2", DB))
        .await
        .unwrap_err();
    // The same words for all three: the client cannot tell which it was.
    for (e, user) in [
        (&wrong, "aq_change_0"),
        (&unknown, "aq_nobody"),
        (&nopass, "aq_change_2"),
    ] {
        assert_eq!(sqlstate(e), "28P01", "{e}");
        assert_eq!(
            message(e),
            format!("password authentication failed for user \"{user}\": no such user or wrong password"),
            "{e}"
        );
    }
    // Asked at every login: a password changed in PostgreSQL holds at the
    // very next one, the old one no longer.
    let c = connect(&p.conninfo("aq_change_0", "pw0", DB))
        .await
        .unwrap();
    c.batch_execute("SELECT 1").await.unwrap();
    su.batch_execute("ALTER ROLE aq_change_0 PASSWORD 'changed'")
        .await
        .unwrap();
    connect(&p.conninfo("aq_change_0", "changed", DB))
        .await
        .expect("the new password works at once");
    connect(&p.conninfo("aq_change_0", "pw0", DB))
        .await
        .expect_err("the old password is refused at once");
    // VALID UNTIL in the past: no login, however right the password, even
    // just after a successful one.
    connect(&p.conninfo("aq_change_1", "pw1", DB))
        .await
        .unwrap();
    su.batch_execute("ALTER ROLE aq_change_1 VALID UNTIL '2000-01-01'")
        .await
        .unwrap();
    let expired = connect(&p.conninfo("aq_change_1", "pw1", DB))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&expired), "28P01", "{expired}");
}

/// A role with an md5 secret: the client answers md5, and its servers log
/// in with the secret auth_query found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_md5_role_logs_in_and_its_servers_too() {
    let userlist = format!("\"{SUPERUSER}\" \"{SUPERPASS}\"\n");
    let p = Pooler::start_with_userlist(
        &format!("pool_mode = \"transaction\"\nauth_user = \"{SUPERUSER}\"\nauth_type = \"md5\"\nadmin_users = \"{SUPERUSER}\""),
        "",
        Some(userlist),
    )
    .await;
    let c = connect(&p.conninfo(MD5_USER, MD5_PASS, DB)).await.unwrap();
    let row = c.query_one("SELECT current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), MD5_USER);
    // A user found this way is in SHOW USERS, with its connection.
    let admin = connect(&p.conninfo(SUPERUSER, SUPERPASS, "pgbouncer"))
        .await
        .unwrap();
    let users = admin.simple_query("SHOW USERS").await.unwrap();
    let row = users
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(MD5_USER) => {
                Some(r.get("current_client_connections").map(str::to_string))
            }
            _ => None,
        })
        .expect("the looked-up user in SHOW USERS");
    assert_eq!(row.as_deref(), Some("1"));
}

/// An auth_query PostgreSQL cannot run is the operator's to fix: the
/// client hears PgBouncer's "bouncer config error", not a password
/// failure; the console, which has no database of its own to ask in,
/// refuses "pgbouncer" as an auth_dbname.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_auth_query_is_a_config_error() {
    make_roles("aq_broken_", 1).await;
    let userlist = format!("\"{SUPERUSER}\" \"{SUPERPASS}\"\n");
    let p = Pooler::start_with_userlist(
        &format!(
            "auth_user = \"{SUPERUSER}\"\nauth_query = \"SELECT usename, passwd FROM no_such_table WHERE usename = $1\"\nstats_users = \"aq_broken_0\""
        ),
        "",
        Some(userlist),
    )
    .await;
    for db in [DB, "pgbouncer"] {
        let e = connect(&p.conninfo("aq_broken_0", "pw0", db))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "28000", "{db}: {e}");
        assert_eq!(message(&e), "bouncer config error", "{db}: {e}");
    }
}
