#![no_main]

#[path = "../targets/flags.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    target::flag_document(data);
});
