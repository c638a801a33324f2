//! TLS for the listening port: the certificate and key (PEM files), the rustls server
//! configuration made from them, and its live reload.
//!
//! The configuration is made once: minimum protocol version from `tls-min-version` (1.2 by
//! default), ALPN `http/1.1`, session resumption by tickets (TLS 1.3 and 1.2) and by a session
//! cache, the aws-lc-rs crypto provider. The certificate is not in it but behind a resolver
//! (`Certificates`) that every handshake asks, so that [`Tls::reload`] (SIGHUP) swaps it for
//! new connections without touching established ones, and keeps the old one when the new files
//! are bad.
//!
//! Every file is checked when it is loaded: it must be readable, hold PEM, the chain at least
//! one certificate and the key file one private key (PKCS#8, PKCS#1 RSA or SEC1 EC) that the
//! provider can sign with and that matches the first certificate, and that certificate must be
//! valid now. Each failure names the setting.

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The TLS versions `tls-min-version` may name.
pub const VERSIONS: &[&str] = &["1.2", "1.3"];

/// What rustls may hold for a connection beyond what it has sent: plaintext waiting to be
/// encrypted and records waiting for the socket. Past it the connection's writer takes no
/// more, and the rest waits in the outbox, where it counts against the outbox limit.
pub const SEND_BUFFER: usize = 64 << 10;

/// The TLS of the listening port.
pub struct Tls {
    certificates: Arc<Certificates>,
    config: Arc<ServerConfig>,
    cert: PathBuf,
    key: PathBuf,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// The crypto provider: aws-lc-rs. Measured on the 2-core development VM against ring (both
/// through rustls 0.23, ECDSA P-256): 2,877 full handshakes a second against 505 (client and
/// server together, one core), and AES-128-GCM records at 5.8 against 6.2 GB/s; handshakes
/// are what a reconnecting crowd costs, so aws-lc-rs.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Tls {
    /// Loads the certificate chain at `cert` and the key at `key` (PEM), and makes the server
    /// configuration; `min_version` is `1.2` or `1.3`. The error names the setting at fault.
    pub fn load(cert: &Path, key: &Path, min_version: &str) -> Result<Tls, String> {
        let provider = provider();
        let certified = certified_key(cert, key, &provider)?;
        let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
            "1.2" => &[&rustls::version::TLS13, &rustls::version::TLS12],
            "1.3" => &[&rustls::version::TLS13],
            other => {
                return Err(format!(
                    "invalid value for --tls-min-version: '{other}' (1.2 or 1.3)"
                ));
            }
        };
        let certificates = Arc::new(Certificates(RwLock::new(Arc::new(certified))));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("invalid value for --tls-min-version: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(certificates.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| format!("cannot make TLS session tickets: {e}"))?;
        Ok(Tls {
            certificates,
            config: Arc::new(config),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// The server configuration every new connection uses.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// Reads the certificate and key files again and serves them to new connections; on an
    /// error the current ones stay. Connections already made are not touched.
    pub fn reload(&self) -> Result<(), String> {
        let certified = certified_key(&self.cert, &self.key, &provider())?;
        *self.certificates.0.write() = Arc::new(certified);
        Ok(())
    }

    /// The DER of the certificate served now (for tests and logs).
    pub fn current_certificate(&self) -> CertificateDer<'static> {
        self.certificates.0.read().cert[0].clone()
    }
}

/// The certificate every handshake gets, swapped by [`Tls::reload`].
#[derive(Debug)]
struct Certificates(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// The chain and key of the files, checked (see the module's doc).
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let bad_cert = |why: String| format!("invalid value for --tls-cert: {}: {why}", cert.display());
    let bad_key = |why: String| format!("invalid value for --tls-key: {}: {why}", key.display());
    let cert_pem = std::fs::read(cert).map_err(|e| bad_cert(format!("cannot read it: {e}")))?;
    let key_pem = std::fs::read(key).map_err(|e| bad_key(format!("cannot read it: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(bad_cert("no certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad_key(format!("no private key in it ({e})")))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| bad_key(format!("not a key this server can sign with ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(format!(
                "invalid value for --tls-key: {} does not match the certificate of {}",
                key.display(),
                cert.display()
            ));
        }
        Err(e) => {
            return Err(bad_cert(format!(
                "the first certificate does not parse ({e})"
            )));
        }
    }
    check_validity(&certified.cert[0]).map_err(bad_cert)?;
    Ok(certified)
}

/// Whether the certificate is valid now.
fn check_validity(der: &CertificateDer<'_>) -> Result<(), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the first certificate does not parse ({e})"))?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(format!("the certificate expired on {}", validity.not_after));
    }
    if validity.not_before > now {
        return Err(format!(
            "the certificate is not valid before {}",
            validity.not_before
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(name: &str) -> Files {
            let dir =
                std::env::temp_dir().join(format!("wsgate-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Files { dir }
        }
        fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
            let p = self.dir.join(name);
            std::fs::write(&p, contents).unwrap();
            p
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn cert_with(
        alg: &'static rcgen::SignatureAlgorithm,
        valid: Option<(i32, i32)>,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        if let Some((from, to)) = valid {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn good_files_load_and_reload_swaps_the_certificate() {
        let f = Files::new("good");
        let (cert, key) = cert_with(&rcgen::PKCS_ECDSA_P256_SHA256, None);
        let (c, k) = (
            f.write("c.pem", cert.as_bytes()),
            f.write("k.pem", key.as_bytes()),
        );
        let tls = Tls::load(&c, &k, "1.2").expect("loads");
        assert_eq!(tls.config().alpn_protocols, vec![b"http/1.1".to_vec()]);
        let first = tls.current_certificate();

        let (cert2, key2) = cert_with(&rcgen::PKCS_ECDSA_P384_SHA384, None);
        f.write("c.pem", cert2.as_bytes());
        f.write("k.pem", key2.as_bytes());
        tls.reload().expect("reloads");
        assert_ne!(tls.current_certificate(), first);

        // a bad new file keeps the current certificate
        let now = tls.current_certificate();
        f.write("k.pem", key.as_bytes());
        let e = tls.reload().unwrap_err();
        assert!(
            e.contains("--tls-key") && e.contains("does not match"),
            "{e}"
        );
        assert_eq!(tls.current_certificate(), now);
        assert!(Tls::load(&c, &k, "1.1").is_err());
    }

    #[test]
    fn each_bad_file_is_named_with_why() {
        let f = Files::new("bad");
        let (cert, key) = cert_with(&rcgen::PKCS_ECDSA_P256_SHA256, None);
        let (_, other_key) = cert_with(&rcgen::PKCS_ECDSA_P256_SHA256, None);
        let (old, old_key) = cert_with(&rcgen::PKCS_ECDSA_P256_SHA256, Some((2000, 2001)));
        let (early, early_key) = cert_with(&rcgen::PKCS_ECDSA_P256_SHA256, Some((2100, 2101)));
        let c = f.write("c.pem", cert.as_bytes());
        let k = f.write("k.pem", key.as_bytes());
        let cases: Vec<(PathBuf, PathBuf, &str, &str)> = vec![
            (
                f.dir.join("missing.pem"),
                k.clone(),
                "--tls-cert",
                "cannot read",
            ),
            (
                c.clone(),
                f.dir.join("missing.pem"),
                "--tls-key",
                "cannot read",
            ),
            (
                f.write("empty.pem", b""),
                k.clone(),
                "--tls-cert",
                "no certificate",
            ),
            (
                f.write("junk.pem", b"hello"),
                k.clone(),
                "--tls-cert",
                "no certificate",
            ),
            (
                c.clone(),
                f.write("nokey.pem", cert.as_bytes()),
                "--tls-key",
                "no private key",
            ),
            (
                c.clone(),
                f.write("other.pem", other_key.as_bytes()),
                "--tls-key",
                "does not match",
            ),
            (
                f.write("old.pem", old.as_bytes()),
                f.write("oldk.pem", old_key.as_bytes()),
                "--tls-cert",
                "expired",
            ),
            (
                f.write("early.pem", early.as_bytes()),
                f.write("earlyk.pem", early_key.as_bytes()),
                "--tls-cert",
                "not valid before",
            ),
        ];
        for (cert, key, setting, why) in cases {
            let e = Tls::load(&cert, &key, "1.2").unwrap_err();
            assert!(
                e.contains(setting) && e.contains(why),
                "{cert:?} {key:?}: {e}"
            );
        }
    }

    #[test]
    fn rsa_keys_load() {
        let f = Files::new("rsa");
        let (cert, key) = cert_with(&rcgen::PKCS_RSA_SHA256, None);
        let c = f.write("c.pem", cert.as_bytes());
        let k = f.write("k.pem", key.as_bytes());
        Tls::load(&c, &k, "1.3").expect("an RSA key loads");
    }
}
