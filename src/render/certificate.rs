//! A self-signed server certificate for when none is given, made in
//! process (no openssl fork): ECDSA P-256, ten years, CN = host name.

use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DnType, KeyPair, SanType};

use super::RenderError;

pub struct Generated {
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn self_signed(host_name: &str) -> Result<Generated, RenderError> {
    let err = |e: rcgen::Error| RenderError::Certificate(e.to_string());
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, host_name);
    if let Ok(name) = host_name.to_owned().try_into() {
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    let year = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(2026, |d| 1970 + (d.as_secs() / 31_556_952) as i32);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(Generated {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_pairs() {
        let g = self_signed("acid-test-0").unwrap();
        assert!(g.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(g.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(self_signed("x").unwrap().key_pem, g.key_pem);
    }
}
