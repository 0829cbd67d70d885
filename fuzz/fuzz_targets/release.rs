#![no_main]

#[path = "../targets/release.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    target::release_body(data);
});
