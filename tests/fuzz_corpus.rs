//! The fuzz targets' corpora (`fuzz/corpus/<target>/`), replayed on
//! stable Rust: every input cargo-fuzz ever kept, or that once crashed a
//! target and was added, runs through the same harness body
//! (`tidepool::fuzzing`) at every test run. The seeds are also mutated a
//! bounded number of times with a fixed-seed generator, a small fuzz run
//! that needs no nightly toolchain.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("frame_scanner", tidepool::fuzzing::frame_scanner),
    ("startup", tidepool::fuzzing::startup),
    ("scram", tidepool::fuzzing::scram),
    ("session_state", tidepool::fuzzing::session_state),
];

/// Mutated inputs per target, spread over its seeds: enough to reach the
/// error paths near each seed, few enough to keep the test at a second or
/// two in a debug build.
const MUTATIONS: usize = 40_000;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// xorshift64*: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit of `data`: flip, set, insert, delete, duplicate a run,
/// or write an interesting length word.
fn mutate(data: &mut Vec<u8>, rng: &mut Rng) {
    let at = rng.below(data.len() + 1);
    match rng.below(6) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = rng.next() as u8;
        }
        2 => data.insert(at, rng.next() as u8),
        3 if !data.is_empty() => {
            data.remove(rng.below(data.len()));
        }
        4 if !data.is_empty() => {
            let from = rng.below(data.len());
            let len = rng.below(16).min(data.len() - from);
            let run: Vec<u8> = data[from..from + len].to_vec();
            data.splice(at..at, run);
        }
        _ => {
            let word: u32 = [0, 3, 4, 5, 8, 0x7fff_ffff, 0xffff_ffff, 10_000, 10_001][rng.below(9)];
            let end = (at + 4).min(data.len());
            data.splice(at..end, word.to_be_bytes());
        }
    }
}

#[test]
fn every_corpus_input_runs_clean() {
    for (name, run) in TARGETS {
        let files = corpus(name);
        assert!(!files.is_empty(), "fuzz/corpus/{name} is empty");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            run(&data);
        }
    }
}

#[test]
fn mutated_corpus_inputs_run_clean() {
    for (name, run) in TARGETS {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let files = corpus(name);
        let per_seed = (MUTATIONS / files.len().max(1)).max(16);
        for f in files {
            let seed = std::fs::read(&f).unwrap();
            let mut data = seed.clone();
            for i in 0..per_seed {
                // Mostly stacked edits, now and then back to the seed.
                if i % 16 == 0 {
                    data.clone_from(&seed);
                }
                mutate(&mut data, &mut rng);
                data.truncate(64 * 1024);
                run(&data);
            }
        }
    }
}
