//! A certificate authority for TLS tests: a fresh CA, and node certificates it signs.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};

use crate::FlightTls;

/// A certificate authority made fresh for a test.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new CA with its own key.
    ///
    /// # Panics
    /// If the key or certificate cannot be made (a broken crypto provider).
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        Self { issuer }
    }

    /// The CA's certificate, PEM (what peers trust).
    pub fn ca_pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    /// A certificate for `names` (host names or IP addresses) signed by this CA, and its
    /// private key, both PEM.
    ///
    /// # Panics
    /// If a name is not valid in a certificate.
    #[allow(clippy::expect_used)]
    pub fn issue(&self, names: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        let params = CertificateParams::new(names).expect("valid certificate names");
        let key = KeyPair::generate().expect("a node key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a node certificate");
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }

    /// TLS settings for a node on this machine: a certificate for `localhost` and
    /// `127.0.0.1`, trusting this CA.
    pub fn node(&self) -> FlightTls {
        let (certificate, key) = self.issue(&["localhost", "127.0.0.1"]);
        FlightTls {
            certificate: Some(certificate),
            private_key: Some(key),
            ca: Some(self.ca_pem()),
            domain: None,
        }
    }
}

impl Default for Authority {
    fn default() -> Self {
        Self::new()
    }
}
