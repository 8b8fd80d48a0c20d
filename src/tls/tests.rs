use std::time::SystemTime;

use super::files::{self, Standing};
use super::settings::{CertFiles, ListenerTls, UpstreamTls};
use super::testing::Pki;
use super::*;

fn listener(cert: PathBuf, key: PathBuf) -> ListenerTls {
    ListenerTls {
        cert,
        key,
        client_ca: None,
    }
}

#[test]
fn a_matching_pair_loads_with_its_validity() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("gw", 90);
    let id = files::load_identity(&cert, &key, SystemTime::now()).unwrap();
    let left = id.validity.seconds_left(SystemTime::now());
    assert!(
        (89.0 * 86_400.0..=90.0 * 86_400.0).contains(&left),
        "{left}"
    );
    assert_eq!(id.validity.standing(SystemTime::now()), Standing::Valid);
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let pki = Pki::new();
    let (cert, _) = pki.leaf("gw", 90);
    let (_, other_key) = pki.leaf("other", 90);
    let err = files::load_identity(&cert, &other_key, SystemTime::now()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("is not the private key of the certificate in"));
}

#[test]
fn files_that_are_not_what_they_should_be_are_named() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("gw", 90);
    let missing = pki.dir.path().join("missing.pem");
    let err = files::load_chain(&missing).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    // A key where the certificate belongs, and the other way round.
    let err = files::load_chain(&key).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    let err = files::load_key(&cert).unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err}");

    let garbage = pki.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    );
    let err = files::load_chain(&garbage).unwrap_err();
    assert!(
        matches!(err, TlsError::BadCertificate { index: 1, .. }),
        "{err}"
    );
    let truncated = pki.write("truncated.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    let err = files::load_chain(&truncated).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
}

#[test]
fn expired_certificates_are_refused_and_near_expiry_is_flagged() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("old", -1);
    let err = files::load_identity(&cert, &key, SystemTime::now()).unwrap_err();
    assert!(matches!(err, TlsError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("expired at"), "{err}");

    let (cert, _) = pki.leaf("soon", 5);
    let chain = files::load_chain(&cert).unwrap();
    match chain.validity.standing(SystemTime::now()) {
        Standing::ExpiresSoon(left) => assert!(left.as_secs() > 4 * 86_400),
        other => panic!("{other:?}"),
    }
    assert!(chain.validity.seconds_left(SystemTime::now()) > 0.0);
}

#[test]
fn a_reload_swaps_only_a_good_certificate() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("gw", 90);
    let acceptor = Acceptor::load("proxy", listener(cert.clone(), key.clone())).unwrap();
    let before = acceptor.validity();
    let config_before = acceptor.config();
    assert_eq!(
        config_before.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );

    // A broken replacement: the old config stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(acceptor.reload().is_err());
    assert!(Arc::ptr_eq(&config_before, &acceptor.config()));

    // A good one: swapped in.
    let (new_cert, new_key) = pki.leaf("gw2", 30);
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let after = acceptor.reload().unwrap();
    assert_ne!(before, after);
    assert_eq!(acceptor.validity(), after);
    assert!(!Arc::ptr_eq(&config_before, &acceptor.config()));
}

#[test]
fn acceptors_reload_each_listener_on_its_own() {
    let pki = Pki::new();
    let (pc, pk) = pki.leaf("proxy", 90);
    let (ac, ak) = pki.leaf("admin", 90);
    let acceptors = Acceptors::load(&crate::config::Tls {
        proxy: Some(listener(pc, pk)),
        admin: Some(listener(ac.clone(), ak)),
    })
    .unwrap();
    std::fs::write(&ac, "").unwrap();
    let outcomes = acceptors.reload("test");
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].listener, "proxy");
    assert!(outcomes[0].outcome.is_ok());
    assert_eq!(outcomes[1].listener, "admin");
    assert!(outcomes[1].outcome.is_err());
}

#[test]
fn client_auth_needs_a_usable_ca() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("admin", 90);
    let mut source = listener(cert.clone(), key);
    source.client_ca = Some(pki.ca());
    Acceptor::load("admin", source.clone()).unwrap();
    source.client_ca = Some(pki.write("empty.pem", ""));
    let err = Acceptor::load("admin", source).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
}

#[test]
fn upstream_client_config_uses_the_private_ca_and_client_certificate() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("client", 90);
    let tls = UpstreamTls {
        ca: Some(pki.ca()),
        server_name: None,
        client_cert: Some(CertFiles { cert, key }),
    };
    let config = client::client_config(&tls, SystemTime::now()).unwrap();
    assert!(config.client_auth_cert_resolver.has_certs());
    let public = client::client_config(&UpstreamTls::default(), SystemTime::now()).unwrap();
    assert!(!public.client_auth_cert_resolver.has_certs());
}
