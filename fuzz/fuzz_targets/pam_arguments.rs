#![no_main]
//! The argument part of a pam.d line, parsed as libpam splits it.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spilo_fuzz::pam_arguments(data);
});
