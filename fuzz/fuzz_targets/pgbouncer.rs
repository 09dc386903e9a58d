#![no_main]
//! pgbouncer.ini and its userlist, as the operator passes them.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spilo_fuzz::operator_pod_with(spilo_fuzz::PGBOUNCER, data);
});
