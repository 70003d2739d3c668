//! Properties of the seams the session relies on, over arbitrary input:
//! the frame scanner finds the same messages however the stream is cut,
//! the startup parser and ErrorResponse parser read back what was built,
//! and nothing panics on bytes that make no sense (the fuzz targets' bodies
//! run here too, with proptest's shrinking).

use bytes::BytesMut;
use proptest::prelude::*;
use tidepool::protocol::{self, ErrorFields, Scanner, Severity, StartupPacket, Step};

/// A message: a type byte and a body.
fn message() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300))
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The (tag, length) of every message the scanner reports in `stream`,
/// delivered in pieces at the `cuts`.
fn scan(stream: &[u8], cuts: &[usize], inspect: fn(u8) -> bool) -> Vec<(u8, usize)> {
    let mut sc = Scanner::new(1 << 20);
    let mut found = Vec::new();
    let mut pos = 0;
    let mut have = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(stream.len());
    // The message being passed through in pieces: (tag, bytes so far).
    let mut passing: Option<(u8, usize)> = None;
    for b in bounds {
        have = have.max(b);
        while pos < have {
            match sc.step(&stream[pos..have], inspect).expect("valid frames") {
                Step::Pass { n, tag } => {
                    if let Some(t) = tag {
                        if let Some(done) = passing.take() {
                            found.push(done);
                        }
                        passing = Some((t, 0));
                    }
                    if let Some((_, len)) = passing.as_mut() {
                        *len += n;
                    }
                    pos += n;
                }
                Step::Whole { tag, len } => {
                    if let Some(done) = passing.take() {
                        found.push(done);
                    }
                    found.push((tag, len));
                    pos += len;
                }
                Step::More { .. } => break,
            }
        }
    }
    found.extend(passing);
    found
}

proptest! {
    #[test]
    fn the_scanner_finds_the_same_messages_however_the_stream_is_cut(
        msgs in proptest::collection::vec(message(), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let stream: Vec<u8> = msgs.iter().flat_map(|(t, b)| frame(*t, b)).collect();
        let want: Vec<(u8, usize)> = msgs.iter().map(|(t, b)| (*t, b.len() + 5)).collect();
        let inspect_some: fn(u8) -> bool = |t| t % 3 == 0;
        prop_assert_eq!(scan(&stream, &[], inspect_some), want.clone());
        prop_assert_eq!(scan(&stream, &cuts, inspect_some), want.clone());
        prop_assert_eq!(scan(&stream, &cuts, |_| false), want);
    }

    #[test]
    fn the_scanner_never_claims_bytes_it_was_not_given(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        max in 0u32..4096,
    ) {
        let mut sc = Scanner::new(max);
        let mut pos = 0;
        while pos < bytes.len() {
            match sc.step(&bytes[pos..], |t| t & 1 == 0) {
                Ok(Step::Pass { n, .. }) => {
                    prop_assert!(n > 0 && n <= bytes.len() - pos);
                    pos += n;
                }
                Ok(Step::Whole { len, .. }) => {
                    prop_assert!(len >= 5 && len <= bytes.len() - pos);
                    pos += len;
                }
                Ok(Step::More { want }) => {
                    prop_assert!(want > bytes.len() - pos);
                    break;
                }
                Err(_) => break,
            }
        }
    }

    #[test]
    fn a_startup_packet_reads_back_its_parameters(
        params in proptest::collection::vec(("[a-z_]{1,20}", proptest::collection::vec(1u8..=255, 0..40)), 0..8),
        minor in 0u16..4,
    ) {
        let mut body = (0x0003_0000u32 | u32::from(minor)).to_be_bytes().to_vec();
        for (k, v) in &params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v);
            body.push(0);
        }
        body.push(0);
        match protocol::parse_startup(&body) {
            Ok(StartupPacket::Startup(p)) => {
                prop_assert_eq!(p.minor, minor);
                let got: Vec<(String, Vec<u8>)> =
                    p.params.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect();
                prop_assert_eq!(got, params);
            }
            other => prop_assert!(false, "not a startup: {:?}", other),
        }
    }

    #[test]
    fn startup_parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = protocol::parse_startup(&body);
        tidepool::fuzzing::startup(&body);
    }

    #[test]
    fn an_error_response_reads_back_its_code_and_message(
        code in "[0-9A-Z]{5}",
        message in "[^\u{0}]{0,200}",
        fatal in any::<bool>(),
    ) {
        let mut b = BytesMut::new();
        let sev = if fatal { Severity::Fatal } else { Severity::Error };
        protocol::error_response(&mut b, sev, &code, &message);
        let f = ErrorFields::parse(&b[5..]);
        prop_assert_eq!(f.code, code);
        prop_assert_eq!(f.message, message);
        prop_assert_eq!(f.severity, if fatal { "FATAL" } else { "ERROR" });
    }

    #[test]
    fn error_parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = ErrorFields::parse(&body);
    }

    #[test]
    fn the_reply_queue_and_release_rule_take_any_conversation(
        pairs in proptest::collection::vec((0u8..4, any::<u8>()), 0..200),
    ) {
        let data: Vec<u8> = pairs.iter().flat_map(|(d, t)| [*d, *t]).collect();
        tidepool::fuzzing::session_state(&data);
        tidepool::fuzzing::frame_scanner(&data);
        tidepool::fuzzing::scram(&data);
    }
}
