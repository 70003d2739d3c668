//! End-to-end: session pooling against a real PostgreSQL.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_md5_and_scram_userlist_entries_log_in() {
    let pg = pg();
    let p = Pooler::start("", "").await;
    // Plaintext userlist secret, SCRAM role on the server.
    let c = p.connect(SCRAM_USER, SCRAM_PASS, DB).await;
    let row = c
        .query_one("SELECT current_user::text, 1 + 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), SCRAM_USER);
    assert_eq!(row.get::<_, i32>(1), 2);
    // md5 userlist secret, md5 role on the server.
    let c = p.connect(MD5_USER, MD5_PASS, DB).await;
    let u: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(u, MD5_USER);
    drop(pg);
}
