use std::path::Path;

use crate::config::{Config, Problem};
use crate::tls::testing::Pki;

fn parse(pki: &Pki, text: &str) -> Result<Config, Vec<Problem>> {
    Config::parse(text, pki.dir.path())
}

fn shown(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(|p| p.to_string()).collect()
}

#[test]
fn listener_files_resolve_against_the_config_folder() {
    let pki = Pki::new();
    pki.leaf("gateway", 90);
    pki.leaf("admin", 90);
    pki.ca();
    let text = "\
upstream: { url: \"http://a\" }
tls:
  proxy: { cert: gateway.pem, key: ./gateway.key }
  admin: { cert: admin.pem, key: admin.key, client_ca: ca.pem }
";
    let c = parse(&pki, text).unwrap_or_else(|p| panic!("{:#?}", shown(&p)));
    let proxy = c.tls.proxy.unwrap();
    assert_eq!(proxy.cert, pki.dir.path().join("gateway.pem"));
    assert_eq!(proxy.key, pki.dir.path().join("gateway.key"));
    assert_eq!(proxy.client_ca, None);
    let admin = c.tls.admin.unwrap();
    assert_eq!(admin.client_ca, Some(pki.dir.path().join("ca.pem")));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn no_tls_section_means_plain_listeners() {
    let c = Config::parse("upstream: { url: \"http://a\" }", Path::new("/nonexistent")).unwrap();
    assert_eq!(c.tls, Default::default());
    assert_eq!(c.upstream.tls, Default::default());
}

#[test]
fn every_certificate_problem_is_reported_with_key_and_line() {
    let pki = Pki::new();
    pki.leaf("gateway", 90);
    pki.leaf("other", 90);
    let text = "\
upstream: { url: \"http://a\" }
tls:
  proxy:
    cert: missing.pem
    client_ca: ca.pem
  admin:
    cert: gateway.pem
    key: other.key
";
    let problems = parse(&pki, text).unwrap_err();
    let shown = shown(&problems);
    assert_eq!(problems.len(), 4, "{shown:#?}");
    assert!(
        shown[0].starts_with("line 3: tls.proxy.key: is required"),
        "{shown:#?}"
    );
    assert!(
        shown[1].starts_with("line 4: tls.proxy.cert: cannot read ")
            && shown[1].contains("missing.pem"),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with("line 5: tls.proxy.client_ca: unknown key"),
        "{shown:#?}"
    );
    assert!(
        shown[3].starts_with("line 8: tls.admin.key: ")
            && shown[3].contains("other.key is not the private key of the certificate in"),
        "{shown:#?}"
    );
}

#[test]
fn an_expired_certificate_is_a_problem_and_a_near_expiry_a_warning() {
    let pki = Pki::new();
    pki.leaf("old", -3);
    pki.leaf("soon", 10);
    let expired =
        "upstream: { url: \"http://a\" }\ntls:\n  proxy: { cert: old.pem, key: old.key }\n";
    let problems = parse(&pki, expired).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "tls.proxy.cert");
    assert_eq!(problems[0].line, Some(3));
    assert!(problems[0].message.contains("expired at"), "{problems:?}");

    let soon =
        "upstream: { url: \"http://a\" }\ntls:\n  admin: { cert: soon.pem, key: soon.key }\n";
    let c = parse(&pki, soon).unwrap();
    assert_eq!(c.warnings.len(), 1);
    let warning = c.warnings[0].to_string();
    assert!(
        warning.starts_with("line 3: tls.admin.cert: ") && warning.contains("expires in 9 day(s)"),
        "{warning}"
    );
}

#[test]
fn https_upstreams_take_a_private_ca_a_server_name_and_a_client_certificate() {
    let pki = Pki::new();
    pki.ca();
    pki.leaf("client", 90);
    let text = "\
upstream:
  url: \"https://10.0.0.5:8443/base\"
  tls: { ca: ca.pem, server_name: profiles.internal, cert: client.pem, key: client.key }
";
    let c = parse(&pki, text).unwrap_or_else(|p| panic!("{:#?}", shown(&p)));
    assert_eq!(c.upstream.origin, "https://10.0.0.5:8443/");
    assert_eq!(c.upstream.base_path, "/base");
    let tls = c.upstream.tls;
    assert_eq!(tls.ca, Some(pki.dir.path().join("ca.pem")));
    assert_eq!(tls.server_name.unwrap().to_str(), "profiles.internal");
    assert_eq!(
        tls.client_cert.unwrap().key,
        pki.dir.path().join("client.key")
    );

    let c = parse(&pki, "upstream: { url: \"https://profiles.example\" }").unwrap();
    assert_eq!(c.upstream.origin, "https://profiles.example/");
    assert_eq!(c.upstream.tls, Default::default());
}

#[test]
fn upstream_tls_mistakes_are_problems() {
    let pki = Pki::new();
    pki.leaf("client", 90);
    let text = "\
upstream:
  url: \"http://backend\"
  tls:
    server_name: \"not a name\"
    cert: client.pem
";
    let problems = parse(&pki, text).unwrap_err();
    let shown = shown(&problems);
    assert_eq!(problems.len(), 3, "{shown:#?}");
    assert!(
        shown[0].starts_with("line 3: upstream.tls: applies only to an https://"),
        "{shown:#?}"
    );
    assert!(
        shown[1].starts_with("line 3: upstream.tls.key: is required"),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with("line 4: upstream.tls.server_name: `not a name` is not a DNS name"),
        "{shown:#?}"
    );
    let problems = parse(&pki, "upstream: { url: \"ftp://backend\" }").unwrap_err();
    assert!(
        problems[0].message.contains("http:// or https://"),
        "{problems:?}"
    );
}
