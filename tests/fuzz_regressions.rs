//! Replays the fuzz targets' seed inputs and every crash input once found (`fuzz/seeds/`,
//! `fuzz/regressions/`) through the same `sockit::fuzzing` functions the fuzz targets call, so
//! a fixed crash stays fixed without a nightly toolchain.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 8] = [
    ("frame_decoder", sockit::fuzzing::frame_decoder),
    ("compat_framing", sockit::fuzzing::compat_framing),
    ("compat_reply", sockit::fuzzing::compat_reply),
    ("headers", sockit::fuzzing::headers),
    ("chat_line", sockit::fuzzing::chat_line),
    ("escaper", sockit::fuzzing::escaper),
    ("rel_path", sockit::fuzzing::rel_path),
    ("http_request", sockit::fuzzing::http_request),
];

#[test]
fn every_seed_and_regression_input_passes_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let mut replayed = 0;
        for kind in ["seeds", "regressions"] {
            let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(name)) else {
                continue;
            };
            for entry in dir {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n == ".keep") {
                    continue;
                }
                target(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "{name}: no seed inputs found under {fuzz:?}");
    }
}

#[test]
fn the_properties_catch_what_they_should() {
    // The escaper's property holds for hostile input, and the validator's for traversal.
    sockit::fuzzing::escaper(b"\x03\x1b[2J\xe2\x80\xae\xe2\x80\x8b\r\n");
    sockit::fuzzing::rel_path(b"a/../../etc");
    // A body that says it is longer than what follows is just incomplete, not a panic.
    let mut frame = vec![1u8];
    let header = br#"{"type":"stdin","size":100}"#;
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(header);
    frame.extend_from_slice(b"short");
    sockit::fuzzing::frame_decoder(&frame);
}
