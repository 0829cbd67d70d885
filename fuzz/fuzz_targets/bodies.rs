#![no_main]

#[path = "../targets/bodies.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = target::request_bodies(data);
});
