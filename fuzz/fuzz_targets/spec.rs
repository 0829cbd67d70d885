#![no_main]

#[path = "../targets/spec.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    target::spec_text(data);
});
