//! Certificates for pgBackRest's TLS server, which a primary's backup
//! reads a replica's files through (WALG_BACKUP_FROM_REPLICA). pgBackRest
//! insists on mutual TLS and checks the server's name, and no member
//! knows its peers' certificates: so every member derives the same CA
//! from the secret they all share, the replication password, and signs
//! its own certificates: the server's, named for the address its peers
//! dial, and the client's, which every server authorizes. Whoever
//! knows that password can already stream the whole database.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::digest::{SHA256, digest};

use super::{Output, RenderError};
use crate::config::Config;

/// The client CN every member presents, the one the servers authorize.
pub(crate) const CLIENT_NAME: &str = "spilo-pgbackrest";

/// pgBackRest's TLS server port (its default).
pub(crate) const PORT: u16 = 8432;

/// PKCS#8 (RFC 8410) of an Ed25519 private key: this prefix, then the
/// 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The CA, this member's certificate and its key, for a configuration
/// that backs up from replicas.
pub(crate) fn files(config: &Config) -> Result<Vec<Output>, RenderError> {
    if !config.backup.as_ref().is_some_and(|b| b.from_replica) {
        return Ok(Vec::new());
    }
    let err = |e: rcgen::Error| RenderError::Certificate(format!("pgBackRest TLS: {e}"));
    let (ca_params, ca_key) = authority(&config.identity.scope, &config.auth.replication.password)?;
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let signed = |name: &str| {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = ca.params().not_before;
        params.not_after = ca.params().not_after;
        params.signed_by(&key, &ca, &ca_key).map_err(err)
    };
    // The server's name is in its CN alone: pgBackRest before 2.53 does
    // not match IP addresses among the alternative names, and every
    // version reads the CN when there are none.
    let server = signed(&config.identity.pg_connect_host)?;
    let client = signed(CLIENT_NAME)?;
    let paths = &config.paths;
    let file = |path, contents: String, mode| Output::File {
        path,
        contents: contents.into_bytes(),
        mode,
        redacted: (mode == 0o600).then(|| super::REDACTED.to_owned()),
    };
    Ok(vec![
        file(paths.pgbackrest_tls("ca.crt"), ca.pem(), 0o644),
        file(paths.pgbackrest_tls("server.crt"), server.pem(), 0o644),
        file(paths.pgbackrest_tls("client.crt"), client.pem(), 0o644),
        file(
            paths.pgbackrest_tls("member.key"),
            key.serialize_pem(),
            0o600,
        ),
    ])
}

/// The cluster's CA: the same on every member, from SHA-256 of the scope
/// and the password (its key, serial and dates are all fixed).
fn authority(scope: &str, password: &str) -> Result<(CertificateParams, KeyPair), RenderError> {
    let err = |e: rcgen::Error| RenderError::Certificate(format!("pgBackRest TLS CA: {e}"));
    let seed = digest(
        &SHA256,
        format!("spilo-rs pgBackRest TLS CA\0{scope}\0{password}").as_bytes(),
    );
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(seed.as_ref());
    let key = KeyPair::try_from(pkcs8.as_slice()).map_err(err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("spilo-rs pgBackRest CA {scope}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from(1u64));
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2999, 12, 31);
    Ok((params, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(scope: &str, password: &str) -> String {
        let (params, key) = authority(scope, password).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_member_certificate_for_its_address_and_the_server_section() {
        let (dir, config) = crate::render::tests::config_on(
            crate::config::System::default(),
            &[
                ("SCOPE", "acid-test"),
                ("WAL_LOCAL_PATH", "/tmp"),
                ("PGPASSWORD_STANDBY", "standby-secret"),
                ("WALG_BACKUP_FROM_REPLICA", "true"),
            ],
        );
        let outputs = files(&config).unwrap();
        let tls = dir.path().join("rw/pgbackrest/tls");
        let modes: Vec<(std::path::PathBuf, u32, bool)> = outputs
            .iter()
            .map(|o| match o {
                Output::File {
                    path,
                    mode,
                    redacted,
                    ..
                } => (path.clone(), *mode, redacted.is_some()),
                Output::Symlink { .. } => panic!("a link"),
            })
            .collect();
        assert_eq!(
            modes,
            [
                (tls.join("ca.crt"), 0o644, false),
                (tls.join("server.crt"), 0o644, false),
                (tls.join("client.crt"), 0o644, false),
                (tls.join("member.key"), 0o600, true),
            ]
        );
        let Output::File { contents, .. } = &outputs[0] else {
            panic!("a link");
        };
        assert_eq!(
            String::from_utf8_lossy(contents),
            ca_pem("acid-test", "standby-secret")
        );
        let conf = crate::render::pgbackrest::files(&config);
        let Some(Output::File { contents, .. }) = conf.first() else {
            panic!("{conf:?}");
        };
        let text = String::from_utf8_lossy(contents);
        let section = format!(
            "\n[global:server]\ntls-server-address=10.0.0.5\ntls-server-port=8432\n\
             tls-server-ca-file={tls}/ca.crt\ntls-server-cert-file={tls}/server.crt\n\
             tls-server-key-file={tls}/member.key\ntls-server-auth=spilo-pgbackrest=acid-test\n",
            tls = tls.display()
        );
        assert!(text.contains(&section), "{text}");
        // Without WALG_BACKUP_FROM_REPLICA: neither.
        let (_dir, config) = crate::render::tests::config_on(
            crate::config::System::default(),
            &[("WAL_LOCAL_PATH", "/tmp")],
        );
        assert_eq!(files(&config).unwrap(), []);
    }

    #[test]
    fn every_member_derives_the_same_ca_and_other_clusters_another() {
        let ca = ca_pem("acid-test", "standby-secret");
        assert_eq!(ca, ca_pem("acid-test", "standby-secret"));
        assert_ne!(ca, ca_pem("acid-test", "another"));
        assert_ne!(ca, ca_pem("acid-other", "standby-secret"));
    }
}
