#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::http_request(data));
