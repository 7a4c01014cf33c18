//! Signing keys read from files, each named by a `kid`: an HMAC secret,
//! or an Ed25519 or P-256 private key in PEM. The `kid` of a key with a
//! public half is its RFC 7638 thumbprint, so every replica reading the
//! same file names it the same; an HMAC secret's is a digest of it that
//! tells nothing of the secret.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::JwtAlgorithm;

/// Shortest HMAC secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// A public key as `/.well-known/jwks.json` publishes it (RFC 7517; RFC
/// 8037 for Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Jwk {
    /// `OKP` (Ed25519) or `EC` (P-256).
    pub kty: &'static str,
    /// `Ed25519` or `P-256`.
    pub crv: &'static str,
    /// The public key (Ed25519), or its x coordinate (P-256), base64url.
    pub x: String,
    /// The y coordinate (P-256 only), base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: &'static str,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub usage: &'static str,
}

/// One key: what signs with it, what verifies with it, and its name.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public half, for keys that have one.
    pub public: Option<Jwk>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// An HMAC key for `algorithm` (HS256, HS384 or HS512).
    pub fn hmac(algorithm: JwtAlgorithm, secret: &SecretString) -> Self {
        let secret = secret.expose_secret().as_bytes();
        let digest = Sha256::new()
            .chain_update(b"tollgate hmac kid\0")
            .chain_update(secret)
            .finalize();
        Self {
            kid: format!("hs-{}", URL_SAFE_NO_PAD.encode(&digest[..12])),
            algorithm: algorithm.into(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            public: None,
        }
    }

    /// The Ed25519 key with this 32-byte seed.
    fn ed25519(seed: &ed25519_dalek::SigningKey) -> Self {
        let public = seed.verifying_key().to_bytes();
        let x = URL_SAFE_NO_PAD.encode(public);
        let kid = thumbprint(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
        Self {
            algorithm: Algorithm::EdDSA,
            // The signing side reads the seed, the verifying side the
            // public key: see `signing.rs`.
            encoding: EncodingKey::from_ed_der(seed.as_bytes()),
            decoding: DecodingKey::from_ed_der(&public),
            public: Some(Jwk {
                kty: "OKP",
                crv: "Ed25519",
                x,
                y: None,
                kid: kid.clone(),
                alg: "EdDSA",
                usage: "sig",
            }),
            kid,
        }
    }

    /// The P-256 key with this secret scalar.
    fn p256(secret: &p256::ecdsa::SigningKey) -> Self {
        let point = secret.verifying_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            unreachable!("an uncompressed point has both coordinates")
        };
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let kid = thumbprint(&format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
        ));
        Self {
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&secret.to_bytes()),
            decoding: DecodingKey::from_ec_der(point.as_bytes()),
            public: Some(Jwk {
                kty: "EC",
                crv: "P-256",
                x,
                y: Some(y),
                kid: kid.clone(),
                alg: "ES256",
                usage: "sig",
            }),
            kid,
        }
    }

    /// Reads the key for `algorithm` from `path`: a PEM private key for
    /// `EdDSA` and `ES256`, the secret itself (trailing newline trimmed)
    /// for HMAC. Refuses a key of another kind than `algorithm` names.
    pub fn read(algorithm: JwtAlgorithm, path: &Path) -> Result<Self, String> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?,
        );
        Self::parse(algorithm, &text)
    }

    /// Reads a key file of any algorithm (a previous key's), telling the
    /// algorithm from its contents.
    pub fn read_any(path: &Path) -> Result<Self, String> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?,
        );
        if !text.contains("-----BEGIN") {
            // Verifies HS384 and HS512 tokens too: see `token.rs`.
            return Self::parse(JwtAlgorithm::HS256, &text);
        }
        [JwtAlgorithm::EdDSA, JwtAlgorithm::ES256]
            .into_iter()
            .find_map(|algorithm| Self::parse(algorithm, &text).ok())
            .ok_or_else(|| {
                "is not a private key Tollgate knows: Ed25519 (PKCS#8) or P-256 (PKCS#8 or \
                 SEC1) in PEM, or an HMAC secret"
                    .to_owned()
            })
    }

    fn parse(algorithm: JwtAlgorithm, text: &str) -> Result<Self, String> {
        let pem = text.contains("-----BEGIN");
        match algorithm {
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => {
                if pem {
                    return Err(format!(
                        "holds a PEM key, not an HMAC secret for {algorithm:?}"
                    ));
                }
                let secret = text.trim_end_matches(['\r', '\n']);
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(format!(
                        "must hold at least {MIN_SECRET_BYTES} bytes (got {})",
                        secret.len()
                    ));
                }
                Ok(Self::hmac(algorithm, &secret.into()))
            }
            JwtAlgorithm::EdDSA => ed25519_dalek::SigningKey::from_pkcs8_pem(text)
                .map(|key| Self::ed25519(&key))
                .map_err(|_| "is not an Ed25519 private key in PKCS#8 PEM (EdDSA)".to_owned()),
            JwtAlgorithm::ES256 => p256::ecdsa::SigningKey::from_pkcs8_pem(text)
                .or_else(|_| {
                    // `openssl ecparam -genkey` writes the curve's
                    // parameters first: the key is the block after them.
                    let sec1 = text
                        .find("-----BEGIN EC PRIVATE KEY-----")
                        .map_or(text, |at| &text[at..]);
                    p256::SecretKey::from_sec1_pem(sec1).map(p256::ecdsa::SigningKey::from)
                })
                .map(|key| Self::p256(&key))
                .map_err(|_| "is not a P-256 private key in PKCS#8 or SEC1 PEM (ES256)".to_owned()),
        }
    }
}

/// A new key for `algorithm`, as a key file holds it: PKCS#8 PEM for
/// `EdDSA` and `ES256`, 64 random characters for HMAC.
pub fn generate(algorithm: JwtAlgorithm) -> Zeroizing<String> {
    match algorithm {
        JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => {
            let bytes = Zeroizing::new(rand::random::<[u8; 48]>());
            let mut secret = Zeroizing::new(String::with_capacity(65));
            URL_SAFE_NO_PAD.encode_string(*bytes, &mut secret);
            secret.push('\n');
            secret
        }
        JwtAlgorithm::EdDSA => {
            let seed = Zeroizing::new(rand::random::<[u8; 32]>());
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("an Ed25519 key encodes");
            Zeroizing::new(pem.as_str().to_owned())
        }
        JwtAlgorithm::ES256 => {
            // A random 32 bytes is a valid scalar but for odds of 2^-32.
            let key = loop {
                let bytes = Zeroizing::new(rand::random::<[u8; 32]>());
                if let Ok(key) = p256::ecdsa::SigningKey::from_slice(bytes.as_slice()) {
                    break key;
                }
            };
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("a P-256 key encodes");
            Zeroizing::new(pem.as_str().to_owned())
        }
    }
}

/// RFC 7638: the SHA-256 of the key's required members in canonical JSON.
fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(algorithm: JwtAlgorithm) -> Self {
        match algorithm {
            JwtAlgorithm::HS256 => Self::HS256,
            JwtAlgorithm::HS384 => Self::HS384,
            JwtAlgorithm::HS512 => Self::HS512,
            JwtAlgorithm::EdDSA => Self::EdDSA,
            JwtAlgorithm::ES256 => Self::ES256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_under_its_algorithm_only() {
        for algorithm in [
            JwtAlgorithm::EdDSA,
            JwtAlgorithm::ES256,
            JwtAlgorithm::HS256,
        ] {
            let text = generate(algorithm);
            let key = Key::parse(algorithm, &text).unwrap();
            assert_eq!(key.algorithm, Algorithm::from(algorithm));
            assert_eq!(Key::parse(algorithm, &text).unwrap().kid, key.kid, "stable");
            assert_eq!(key.public.is_some(), algorithm != JwtAlgorithm::HS256);
            for other in [
                JwtAlgorithm::EdDSA,
                JwtAlgorithm::ES256,
                JwtAlgorithm::HS256,
            ] {
                if other != algorithm {
                    assert!(
                        Key::parse(other, &text).is_err(),
                        "{algorithm:?} as {other:?}"
                    );
                }
            }
        }
        assert_ne!(
            Key::parse(JwtAlgorithm::EdDSA, &generate(JwtAlgorithm::EdDSA))
                .unwrap()
                .kid,
            Key::parse(JwtAlgorithm::EdDSA, &generate(JwtAlgorithm::EdDSA))
                .unwrap()
                .kid
        );
    }

    /// RFC 8037, appendix A.3: the thumbprint of its example Ed25519 key.
    #[test]
    fn the_ed25519_kid_is_the_rfc_7638_thumbprint() {
        let seed = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap());
        let key = Key::ed25519(&key);
        let public = key.public.unwrap();
        assert_eq!(public.x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(key.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn a_short_secret_and_a_pem_as_a_secret_are_refused() {
        assert!(Key::parse(JwtAlgorithm::HS256, "short").is_err());
        let pem = generate(JwtAlgorithm::EdDSA);
        assert!(Key::parse(JwtAlgorithm::HS256, &pem).is_err());
    }
}
