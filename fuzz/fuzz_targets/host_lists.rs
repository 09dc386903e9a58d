#![no_main]
//! A DCS host list (YAML, JSON or comma separated).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spilo_fuzz::operator_pod_with(spilo_fuzz::HOST_LISTS, data);
});
