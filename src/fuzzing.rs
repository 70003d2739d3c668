//! Fuzz harness bodies: the cargo-fuzz targets in `fuzz/` and the corpus
//! replay test (`tests/fuzz_corpus.rs`) call the same functions, so an
//! input that once crashed one of them is replayed on stable Rust by every
//! test run. Each function takes arbitrary bytes and must neither panic nor
//! loop; the assertions inside are the invariants the session relies on.

use crate::auth::scram::{ScramSecret, ScramServer};
use crate::prepared::{Kind, Reply, Responses};
use crate::protocol::{self, backend, frontend, Scanner, Step, TxStatus};
use crate::session::LinkState;

/// The frame scanner over a stream cut into arbitrary pieces: every step
/// moves forward within the buffer, and the scanner never claims bytes it
/// was not given. The first byte picks the packet limit and piece size.
pub fn frame_scanner(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let max = 16 + u32::from(sel) * 131;
    let piece = usize::from(sel % 7) + 1;
    for mut sc in [Scanner::new(max), Scanner::whole(max)] {
        let mut have = 0;
        let mut pos = 0;
        while pos < stream.len() {
            // The socket delivers `piece` more bytes at a time.
            have = (have + piece).min(stream.len());
            loop {
                let buf = &stream[pos..have];
                let inspect = |t| {
                    matches!(
                        t,
                        backend::ERROR_RESPONSE
                            | backend::PARAMETER_STATUS
                            | backend::READY_FOR_QUERY
                            | frontend::PARSE
                    )
                };
                match sc.step(buf, inspect) {
                    Ok(Step::Pass { n, .. }) => {
                        assert!(n > 0 && n <= buf.len(), "pass {n} of {}", buf.len());
                        pos += n;
                    }
                    Ok(Step::Whole { tag, len }) => {
                        assert!(len >= 5 && len <= buf.len());
                        assert_eq!(tag, buf[0]);
                        if tag == backend::ERROR_RESPONSE {
                            let _ = protocol::ErrorFields::parse(&buf[5..len]);
                        }
                        if tag == backend::PARAMETER_STATUS {
                            let _ = protocol::parse_parameter_status(&buf[5..len]);
                        }
                        pos += len;
                    }
                    Ok(Step::More { want }) => {
                        assert!(want > buf.len() || buf.is_empty());
                        break;
                    }
                    Err(_) => return,
                }
                if pos == have {
                    break;
                }
            }
            if have == stream.len() && pos < have {
                // What is left is an incomplete message.
                break;
            }
        }
    }
}

/// Startup-phase negotiation: the length check and the packet parser, as
/// the login reads them one after another from one buffer.
pub fn startup(data: &[u8]) {
    let mut rest = data;
    while rest.len() >= 4 {
        let Ok(len) = protocol::check_startup_len(protocol::be_u32(rest)) else {
            return;
        };
        let Some(body) = rest.get(4..len) else {
            return;
        };
        match protocol::parse_startup(body) {
            Ok(protocol::StartupPacket::Startup(p)) => {
                let _ = p.get("user");
                return;
            }
            Ok(_) => rest = &rest[len..],
            Err(_) => return,
        }
    }
}

/// A SCRAM exchange as the server side sees it: the input is split at the
/// first NUL into client-first and client-final messages.
pub fn scram(data: &[u8]) {
    let (first, fin) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let secret = ScramSecret {
        iterations: 1,
        salt: b"fuzzsalt".to_vec(),
        stored_key: [7; 32],
        server_key: [9; 32],
    };
    for plus in [false, true] {
        let binding = plus.then(|| vec![1u8; 32]);
        let mut s = ScramServer::new(secret.clone()).with_channel_binding(plus, binding);
        if s.client_first(first).is_ok() {
            // A proof from bytes that know no key never succeeds.
            assert!(s.client_final(fin).is_err());
        }
    }
}

/// The session's bookkeeping fed an arbitrary conversation: each pair of
/// bytes is (direction, tag). The release rule and the expected-reply
/// queue must accept any order without panicking.
pub fn session_state(data: &[u8]) {
    let mut link = LinkState::default();
    let mut replies = Responses::default();
    for pair in data.chunks_exact(2) {
        let (dir, tag) = (pair[0], pair[1]);
        match dir % 4 {
            0 => {
                link.client_message(tag);
                replies.forward(match tag {
                    frontend::PARSE => Kind::Parse(Some(u64::from(dir))),
                    frontend::BIND => Kind::Bind(None),
                    frontend::DESCRIBE => Kind::DescribePortal,
                    frontend::EXECUTE => Kind::Execute,
                    frontend::CLOSE => Kind::Close,
                    _ => Kind::Sync,
                });
            }
            1 => {
                link.server_message(tag);
                let _ = replies.server(tag);
            }
            2 => {
                if let Some(status) = TxStatus::from_byte(tag) {
                    link.ready(status);
                }
            }
            _ => {
                replies.synthetic(match tag % 4 {
                    0 => Reply::ParseComplete,
                    1 => Reply::CloseComplete,
                    2 => Reply::StalePlan,
                    _ => Reply::Error,
                });
                if replies.synthetic_due() {
                    let _ = replies.take_synthetic();
                }
            }
        }
        let _ = (link.releasable(), link.busy(), link.quiet(), link.status());
    }
}
