//! The session loop over in-memory sockets: no PostgreSQL, no network.
//!
//! The client's connection and the server's are each one end of a Unix
//! socket pair (in the kernel's memory, no file, no port), so the loop
//! runs its real read paths (`try_read_raw`, readiness) as on a TCP
//! socket. The test plays both peers and checks that every byte written
//! on one side arrives, unchanged and in order, on the other, however the
//! writes are cut.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{NewSession, Session};
use crate::config::{Config, DatabaseConfig, PoolMode};
use crate::net::{Conn, Stream};
use crate::pool::{Grant, PoolKey};
use crate::protocol::{backend, frontend};
use crate::server::ServerConn;
use crate::Shared;

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn query(sql: &str) -> Vec<u8> {
    message(frontend::QUERY, &[sql.as_bytes(), b"\0"].concat())
}

/// A select's reply: RowDescription, DataRow, CommandComplete, then
/// ReadyForQuery idle.
fn select_reply(value: &[u8]) -> Vec<u8> {
    let mut desc = 1u16.to_be_bytes().to_vec();
    desc.extend_from_slice(b"x\0");
    desc.extend_from_slice(&[0; 4]); // table oid
    desc.extend_from_slice(&[0; 2]); // column
    desc.extend_from_slice(&25u32.to_be_bytes()); // text
    desc.extend_from_slice(&(-1i16).to_be_bytes());
    desc.extend_from_slice(&(-1i32).to_be_bytes());
    desc.extend_from_slice(&[0; 2]); // text format
    let mut row = 1u16.to_be_bytes().to_vec();
    row.extend_from_slice(&(value.len() as u32).to_be_bytes());
    row.extend_from_slice(value);
    [
        message(backend::ROW_DESCRIPTION, &desc),
        message(backend::DATA_ROW, &row),
        message(backend::COMMAND_COMPLETE, b"SELECT 1\0"),
        message(backend::READY_FOR_QUERY, b"I"),
    ]
    .concat()
}

/// Writes `bytes` in pieces of `cut` bytes, flushing each.
async fn write_cut(s: &mut UnixStream, bytes: &[u8], cut: usize) {
    for piece in bytes.chunks(cut) {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
}

async fn read_exactly(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    s.read_exact(&mut got).await.unwrap();
    got
}

/// A transaction-mode session whose pool holds one idle server, the far
/// end of `server`; the client's end is returned with the session.
async fn session_with_one_server() -> (Arc<Shared>, Session, Conn, UnixStream, UnixStream) {
    let mut cfg = Config::default();
    cfg.settings.pool_mode = PoolMode::Transaction;
    cfg.databases
        .insert("db".into(), Arc::new(DatabaseConfig::default()));
    let tls = crate::tls::load(&cfg.settings, std::path::Path::new("/")).unwrap();
    let shared = Shared::new(cfg, tls, crate::threads::Timers::current());
    let cfg = shared.config();
    let db = cfg.database("db").unwrap();
    let pool = shared.pools.get(&PoolKey {
        db: "db".into(),
        user: "u".into(),
    });
    let listed = shared.registry.add_client(crate::registry::Entry::new(
        shared.next_id(),
        "u".into(),
        "db".into(),
        crate::registry::Place::Unix,
        0,
        None,
        false,
        String::new(),
        0,
    ));
    let session = Session::new(NewSession {
        shared: shared.clone(),
        cfg: cfg.clone(),
        db,
        pool: pool.clone(),
        mode: PoolMode::Transaction,
        replication: None,
        wanted: Default::default(),
        followed: Default::default(),
        reg: shared.cancels.register(),
        listed,
        guards: [
            shared.client_guard(10).unwrap(),
            shared.db_client_guard("db", 10).unwrap(),
            shared.user_client_guard("u", 10).unwrap(),
        ],
    });
    let Grant::Slot(slot) = pool.checkout(session.limits()).await.unwrap() else {
        panic!("an empty pool grants a slot");
    };
    let (ours, server_end) = UnixStream::pair().unwrap();
    let server = ServerConn::from_stream(&session.login_info(), Stream::Unix(ours), slot);
    pool.checkin(Box::new(server));
    let (ours, client_end) = UnixStream::pair().unwrap();
    let conn = Conn {
        stream: Stream::Unix(ours),
        rbuf: BytesMut::new(),
    };
    (shared, session, conn, client_end, server_end)
}

#[tokio::test]
async fn bytes_cut_anywhere_arrive_whole_and_in_order_both_ways() {
    // `shared` keeps the pool, and so its idle server, alive to the end.
    let (shared, mut session, mut conn, mut client, mut server) = session_with_one_server().await;
    let run = tokio::spawn(async move {
        let r = session.run(&mut conn).await;
        (r, session.pool.report())
    });
    // Each round: a query cut in pieces of `cut` bytes, its reply too; in
    // transaction mode the server is released after each and linked again.
    for (round, cut) in [1usize, 2, 3, 7, 1000].into_iter().enumerate() {
        let q = query(&format!("select {round}"));
        write_cut(&mut client, &q, cut).await;
        assert_eq!(read_exactly(&mut server, q.len()).await, q, "cut {cut}");
        let reply = select_reply(format!("value {round}").as_bytes());
        write_cut(&mut server, &reply, cut).await;
        assert_eq!(
            read_exactly(&mut client, reply.len()).await,
            reply,
            "cut {cut}"
        );
    }
    // Two queries in one write, their replies in one: a pipeline.
    let two = [query("select 'a'"), query("select 'b'")].concat();
    client.write_all(&two).await.unwrap();
    assert_eq!(read_exactly(&mut server, two.len()).await, two);
    let replies = [select_reply(b"a"), select_reply(b"b")].concat();
    server.write_all(&replies).await.unwrap();
    assert_eq!(read_exactly(&mut client, replies.len()).await, replies);

    client
        .write_all(&message(frontend::TERMINATE, b""))
        .await
        .unwrap();
    let (result, report) = run.await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    // The server went back to the pool after the last transaction, and
    // saw no Terminate of the client's.
    assert_eq!((report.servers, report.idle), (1, 1));
    // Everything the session wrote is in the socket by now.
    let mut rest = [0u8; 1];
    let n = server.try_read(&mut rest);
    assert!(
        matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the server got more: {n:?}"
    );
    drop(shared);
}
