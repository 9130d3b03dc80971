//! Writes a throwaway certificate authority and a server certificate it
//! signed, for testing `keyward serve --tls-cert --tls-key`:
//!
//! ```text
//! cargo run -p keyward-cli --example gencert -- DIR
//! ```
//!
//! creates `DIR/ca.pem` (trust this one: `REQUESTS_CA_BUNDLE`, `--cacert`),
//! `DIR/cert.pem` and `DIR/key.pem` (for `--tls-cert` and `--tls-key`). The
//! server certificate names `localhost`, `127.0.0.1` and `::1`. The HTTPS
//! tests include this file to make their certificates the same way.
//!
//! A CA plus a leaf, rather than one self-signed leaf: webpki refuses a CA
//! certificate as a server's, and strict OpenSSL verification wants a leaf
//! with an authority key identifier.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A test CA and a server certificate it signed, all PEM.
pub struct TestCerts {
    /// The CA certificate: what clients trust.
    pub ca: String,
    /// The server certificate (`--tls-cert`).
    pub cert: String,
    /// The server's private key, PKCS#8 (`--tls-key`).
    pub key: String,
}

impl TestCerts {
    /// Generates fresh keys (ECDSA P-256) and certificates.
    pub fn generate() -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "keyward test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() })
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<[PathBuf; 3]> {
        let paths = [dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem")];
        for (path, pem) in paths.iter().zip([&self.ca, &self.cert, &self.key]) {
            std::fs::write(path, pem)?;
        }
        Ok(paths)
    }
}

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gencert DIR");
        return std::process::ExitCode::from(2);
    };
    let written = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| TestCerts::generate().map_err(|e| e.to_string()))
        .and_then(|certs| certs.write(&dir).map_err(|e| e.to_string()));
    match written {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gencert: {}: {e}", dir.display());
            std::process::ExitCode::from(1)
        }
    }
}
