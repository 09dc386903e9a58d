#![no_main]
//! A tokeninfo answer, the user and the token of one login.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spilo_fuzz::tokeninfo(data);
});
