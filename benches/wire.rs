//! Wire v1 codec throughput: header-only frames and 16 KiB-body frames, decode and encode.

use std::time::Duration;

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use sockit::wire::{encode_frame, Decoded, FrameDecoder, Message};

const FRAMES_PER_ITER: usize = 64;

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BenchMsg {
    Exec { argv: Vec<String>, size: u64 },
    Put { name: String, size: u64 },
}

impl Message for BenchMsg {
    fn body_size(&self) -> u64 {
        match self {
            BenchMsg::Exec { size, .. } | BenchMsg::Put { size, .. } => *size,
        }
    }
}

struct Case {
    name: &'static str,
    msg: BenchMsg,
    body: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let body = vec![0xa5; 16 * 1024];
    vec![
        Case {
            name: "header_only_64b",
            msg: BenchMsg::Exec {
                argv: vec!["ls".into(), "-la".into(), "/tmp/some/dir".into()],
                size: 0,
            },
            body: Vec::new(),
        },
        Case {
            name: "body_16kib",
            msg: BenchMsg::Put {
                name: "file.bin".into(),
                size: body.len() as u64,
            },
            body,
        },
    ]
}

fn encode_stream(case: &Case) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..FRAMES_PER_ITER {
        encode_frame(&case.msg, &case.body, &mut buf).expect("encodes");
    }
    buf
}

fn bench_wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    for case in cases() {
        let stream = encode_stream(&case);
        let frame_len = stream.len() / FRAMES_PER_ITER;
        eprintln!("{}: {} bytes per frame", case.name, frame_len);
        group.throughput(Throughput::Bytes(stream.len() as u64));

        group.bench_function(format!("decode/{}", case.name), |b| {
            b.iter_batched(
                || stream.clone(),
                |mut buf| {
                    let mut decoder = FrameDecoder::new();
                    let mut bytes = 0;
                    while let Some(step) = decoder.decode::<BenchMsg>(&mut buf).expect("decodes") {
                        match step {
                            Decoded::Header(msg) => bytes += msg.body_size(),
                            Decoded::Body(chunk) => bytes += black_box(chunk).len() as u64,
                        }
                    }
                    bytes
                },
                BatchSize::LargeInput,
            )
        });

        let mut dst = BytesMut::with_capacity(stream.len());
        group.bench_function(format!("encode/{}", case.name), |b| {
            b.iter(|| {
                dst.clear();
                for _ in 0..FRAMES_PER_ITER {
                    encode_frame(black_box(&case.msg), &case.body, &mut dst).expect("encodes");
                }
                dst.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_wire);
criterion_main!(benches);
