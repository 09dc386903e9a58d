#![no_main]
//! SPILO_CONFIGURATION of an operator pod: the YAML merge and Patroni's file.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spilo_fuzz::operator_pod_with(spilo_fuzz::SPILO_CONFIGURATION, data);
});
