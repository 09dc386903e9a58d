#![no_main]
//! A request head to the monitor's HTTP server.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spilo_fuzz::monitor_request(data);
});
