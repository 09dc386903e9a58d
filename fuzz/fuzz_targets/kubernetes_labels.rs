#![no_main]
//! KUBERNETES_LABELS and KUBERNETES_BOOTSTRAP_LABELS (JSON objects).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spilo_fuzz::operator_pod_with(spilo_fuzz::KUBERNETES_LABELS, data);
});
