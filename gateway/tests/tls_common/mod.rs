//! What the TLS tests of independent clients share (gateway/tests/clients_tls.rs,
//! gateway/tests/browser_tls.rs): a test CA made at test time with rcgen, a server certificate
//! it signed for `localhost` and 127.0.0.1, the PEM files a client and the gateway read, the
//! SubjectPublicKeyInfo pin Chromium is given, and a gateway started with them.
#![allow(dead_code)]

use crate::common::Gateway;
use std::path::{Path, PathBuf};

/// A test CA and a server certificate it signed, written to a directory of their own
/// (removed on drop): `ca.pem`, `cert.pem`, `key.pem`.
pub(crate) struct TestPki {
    dir: PathBuf,
    /// The DER of the server key's SubjectPublicKeyInfo.
    spki: Vec<u8>,
}

impl TestPki {
    /// Makes a new CA (ECDSA P-256) and a server certificate for `localhost` and 127.0.0.1
    /// signed by it; `name` keeps the directories of concurrent tests apart.
    pub(crate) fn new(name: &str) -> TestPki {
        let dir =
            std::env::temp_dir().join(format!("wsgate-tls-clients-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("wsgate test CA ({name})"),
        );
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsgate test server");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

        for (file, text) in [
            ("ca.pem", ca.pem()),
            ("cert.pem", cert.pem()),
            ("key.pem", key.serialize_pem()),
        ] {
            std::fs::write(dir.join(file), text).unwrap();
        }
        TestPki {
            dir,
            spki: key.public_key_der(),
        }
    }

    /// The CA certificate (PEM) a client is to trust.
    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate (PEM).
    pub(crate) fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The server key (PEM).
    pub(crate) fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// base64(SHA-256(SubjectPublicKeyInfo)) of the server key: the form Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub(crate) fn spki_sha256_base64(&self) -> String {
        // SHA-256 from the crypto provider the tests already link (rustls on aws-lc-rs)
        let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
        let digest = suite
            .tls13()
            .expect("a TLS 1.3 suite")
            .common
            .hash_provider
            .hash(&self.spki);
        base64(digest.as_ref())
    }

    /// Starts `wsgate --listen 127.0.0.1:0 --tls-cert CERT --tls-key KEY EXTRA...`.
    pub(crate) fn start_gateway(&self, extra: &[&str]) -> Gateway {
        let (cert, key) = (self.cert(), self.key());
        let mut args = vec!["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)];
        args.extend_from_slice(extra);
        Gateway::start(&args)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Standard base64 with padding (RFC 4648 section 4).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
