//! Certificates the tests make: a CA of their own and, signed by it, a
//! server's (rcgen). Include it with `mod tls_support;` from a test, or
//! with `#[path = "../tls_support/mod.rs"]` from another support module.

#![allow(dead_code)] // each test binary uses its own part

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// A CA's certificate, and a server's certificate and key, as PEM.
pub struct Pem {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// The subject alternative name of an IP address.
pub fn ip_name(ip: &str) -> SanType {
    SanType::IpAddress(ip.parse().expect("an IP address"))
}

/// A new CA called `ca_name` and, signed by it, the certificate of a
/// server called `common_name` under `names`.
pub fn server_certificate(ca_name: &str, common_name: &str, names: Vec<SanType>) -> Pem {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

    let mut params = CertificateParams::default();
    params.subject_alt_names = names;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let key = KeyPair::generate().expect("server key");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    Pem {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}
