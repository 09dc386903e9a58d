#![no_main]
//! A whole environment, as KEY=VALUE lines, through the model and every renderer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spilo_fuzz::environment(data);
});
