#![no_main]
// The body lives in the library (tidepool::fuzzing), so that
// tests/fuzz_corpus.rs replays this target's corpus on stable Rust.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::session_state(data));
