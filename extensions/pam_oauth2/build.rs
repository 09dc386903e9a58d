//! Link the cdylib with `-z nodelete`: libpam dlopen()s and dlclose()s the
//! module for every PAM handle, and a Rust library must not really be
//! unloaded while its statics (agent cache, TLS destructors) are live.
//! With nodelete the first load stays, so repeated logins in one process
//! (pgbouncer) neither leak nor lose the agent cache.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
}
