//! Framing throughput: how fast the hot-path scanner walks a stream of
//! server messages (DataRows with a ReadyForQuery at the end), inspecting
//! only what the session loop inspects; in bytes and in messages per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidepool::protocol::{Scanner, Step};

fn msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
}

fn stream(rows: usize, row_len: usize) -> Vec<u8> {
    let mut s = Vec::new();
    let row = vec![7u8; row_len];
    for _ in 0..rows {
        msg(&mut s, b'D', &row);
    }
    msg(&mut s, b'C', b"SELECT 1000\0");
    msg(&mut s, b'Z', b"I");
    s
}

fn scan_all(buf: &[u8]) -> usize {
    let mut sc = Scanner::new(u32::MAX);
    let mut pos = 0;
    let mut messages = 0;
    while pos < buf.len() {
        match sc.step(&buf[pos..], |t| t == b'Z' || t == b'S') {
            Ok(Step::Pass { n, tag }) => {
                messages += tag.is_some() as usize;
                pos += n;
            }
            Ok(Step::Whole { len, .. }) => {
                messages += 1;
                pos += len;
            }
            _ => break,
        }
    }
    messages
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scanner");
    for (rows, len) in [(1000usize, 16usize), (100, 1024)] {
        let s = stream(rows, len);
        g.throughput(Throughput::Bytes(s.len() as u64));
        g.bench_function(format!("{rows}x{len}B rows"), |b| {
            b.iter(|| scan_all(std::hint::black_box(&s)))
        });
    }
    g.finish();
    // The same walk counted in messages: what a chatty result set costs.
    let mut g = c.benchmark_group("scanner messages");
    for (rows, len) in [(1000usize, 16usize), (100, 1024)] {
        let s = stream(rows, len);
        g.throughput(Throughput::Elements(rows as u64 + 2));
        g.bench_function(format!("{rows}x{len}B rows"), |b| {
            b.iter(|| scan_all(std::hint::black_box(&s)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
