//! TLS clients for PostgreSQL and Redis: rustls with the ring provider,
//! trusting the certificates of a `tls_ca_file` when one is set and the
//! system's otherwise. What is checked follows the settings, never the
//! server: a connection asked to be encrypted is never made in plaintext.
//! Built when the settings are checked, so `check-config` reports what
//! start-up would.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::{DatabaseSettings, RedisSettings, RedisUrl, SslMode};

/// What a client checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing: encryption against a passive listener only (libpq's
    /// `prefer`, and `require` without a CA file).
    Nothing,
    /// Issued by a trusted CA, for whatever host (`verify-ca`).
    Issuer,
    /// Issued by a trusted CA for the host connected to.
    IssuerAndName,
}

impl DatabaseSettings {
    /// The TLS client for the pool; with `sslmode=disable` it is never
    /// used.
    pub fn tls(&self) -> anyhow::Result<ClientConfig> {
        let (_, mode) = self.url.connection();
        let ca_file = self.tls_ca_file.as_deref();
        let check = match (mode, ca_file) {
            (SslMode::Disable | SslMode::Prefer, Some(_)) => anyhow::bail!(
                "database.tls_ca_file is set but database.url's sslmode does not use it: \
                 say sslmode=verify-full (or verify-ca, require)"
            ),
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, None) => Check::Nothing,
            (SslMode::Require | SslMode::VerifyCa, Some(_)) | (SslMode::VerifyCa, None) => {
                Check::Issuer
            }
            (SslMode::VerifyFull, _) => Check::IssuerAndName,
        };
        client_config(check, ca_file, "database.tls_ca_file")
    }
}

impl RedisSettings {
    /// The TLS client for `rediss://`, checking issuer and host name as
    /// every Redis client does; `None` for a plaintext URL.
    pub fn tls(&self) -> anyhow::Result<Option<ClientConfig>> {
        let encrypted = self.url.as_ref().is_some_and(RedisUrl::uses_tls);
        match (encrypted, self.tls_ca_file.as_deref()) {
            (false, Some(_)) => anyhow::bail!(
                "redis.tls_ca_file is set but redis.url is not rediss://: \
                 the connection would not be encrypted"
            ),
            (false, None) => Ok(None),
            (true, ca_file) => {
                client_config(Check::IssuerAndName, ca_file, "redis.tls_ca_file").map(Some)
            }
        }
    }
}

fn client_config(check: Check, ca_file: Option<&Path>, key: &str) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(Lenient {
            issuer: None,
            algorithms,
        }),
        Check::Issuer | Check::IssuerAndName => {
            let roots = Arc::new(trusted_roots(ca_file, key)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .context("building the certificate verifier")?;
            match check {
                Check::Issuer => Arc::new(Lenient {
                    issuer: Some(webpki),
                    algorithms,
                }),
                _ => webpki,
            }
        }
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS 1.2 and 1.3 with the ring provider")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The certificates of `ca_file`, or the system's trusted ones.
fn trusted_roots(ca_file: Option<&Path>, key: &str) -> anyhow::Result<RootCertStore> {
    let certificates: Vec<CertificateDer<'static>> = match ca_file {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .with_context(|| format!("reading {key} {}", path.display()))?,
        None => rustls_native_certs::load_native_certs().certs,
    };
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        match ca_file {
            Some(path) => anyhow::bail!("{key} {} holds no certificate", path.display()),
            None => anyhow::bail!("the system trusts no CA certificate: set {key}"),
        }
    }
    Ok(roots)
}

/// Checks less than `webpki` does: with no `issuer`, nothing of the
/// certificate; with one, its chain but not its host name. Either way the
/// server must prove it holds the certificate's key.
#[derive(Debug)]
struct Lenient {
    issuer: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(issuer) = &self.issuer else {
            return Ok(ServerCertVerified::assertion());
        };
        // The chain is verified before the name, so a name error means the
        // chain was good.
        match issuer.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            checked => checked,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of its own under the system's temporary directory, removed
    /// when dropped.
    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn database(url: &str, ca_file: Option<&str>) -> DatabaseSettings {
        DatabaseSettings {
            url: url.parse().unwrap(),
            pool_size: 1,
            timeout_secs: 1,
            tls_ca_file: ca_file.map(Into::into),
        }
    }

    /// A CA's certificate in a PEM file, and a server certificate it
    /// issued for `db.internal` with its key.
    struct Issued {
        ca_file: TempFile,
        cert: CertificateDer<'static>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    }

    fn issue() -> Issued {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["db.internal".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let name = format!("tollgate-ca-{}.pem", uuid::Uuid::new_v4());
        let ca_file = TempFile(std::env::temp_dir().join(name));
        std::fs::write(&ca_file.0, ca.pem()).unwrap();
        Issued {
            ca_file,
            cert: cert.der().clone(),
            key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }

    /// Whether a client with `config` completes a handshake with a server
    /// presenting `server`'s certificate, having asked for `name`.
    async fn shakes_hands(config: ClientConfig, server: &Issued, name: &str) -> bool {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![server.cert.clone()], server.key.clone_key())
            .unwrap();
        let (client_end, server_end) = tokio::io::duplex(16 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let accepted = tokio::spawn(async move { acceptor.accept(server_end).await.is_ok() });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let connected = connector.connect(name, client_end).await.is_ok();
        accepted.abort();
        connected
    }

    #[tokio::test]
    async fn each_ssl_mode_checks_what_libpq_checks() {
        let (server, stranger) = (issue(), issue());
        let trusting = |mode: &str, ca: Option<&Issued>| {
            let url = format!("postgres://db.internal/x?sslmode={mode}");
            database(&url, ca.map(|ca| ca.ca_file.0.to_str().unwrap()))
                .tls()
                .unwrap()
        };
        let cases = [
            ("verify-full", Some(&server), "db.internal", true),
            ("verify-full", Some(&server), "other.internal", false),
            ("verify-full", Some(&stranger), "db.internal", false),
            ("verify-ca", Some(&server), "other.internal", true),
            ("verify-ca", Some(&stranger), "db.internal", false),
            ("require", Some(&server), "other.internal", true),
            ("require", Some(&stranger), "db.internal", false),
            ("require", None, "other.internal", true),
            ("prefer", None, "other.internal", true),
        ];
        for (mode, ca, name, accepted) in cases {
            let trusted = ca.map(|ca| std::ptr::eq(ca, &server));
            assert_eq!(
                shakes_hands(trusting(mode, ca), &server, name).await,
                accepted,
                "sslmode={mode}, CA file of the issuer: {trusted:?}, host {name}"
            );
        }
    }

    #[test]
    fn a_ca_file_that_the_ssl_mode_would_not_use_is_refused() {
        for mode in ["disable", "prefer"] {
            let settings = database(&format!("postgres://db/x?sslmode={mode}"), Some("/ca.pem"));
            let err = settings.tls().err().unwrap().to_string();
            assert!(err.contains("does not use it"), "{mode}: {err}");
        }
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let settings = database("postgres://db/x?sslmode=verify-full", Some("/etc/hostname"));
        let err = settings.tls().err().unwrap().to_string();
        assert_eq!(
            err,
            "database.tls_ca_file /etc/hostname holds no certificate"
        );
        let settings = database("postgres://db/x?sslmode=verify-ca", Some("/no/such.pem"));
        let err = format!("{:#}", settings.tls().err().unwrap());
        assert!(
            err.starts_with("reading database.tls_ca_file /no/such.pem"),
            "{err}"
        );
    }
}
