//! The signing algorithms tokens may use, as jsonwebtoken's crypto
//! provider. jsonwebtoken's own `rust_crypto` provider compiles every
//! algorithm it knows, RSA among them (whose crate carries an unfixed
//! timing advisory, RUSTSEC-2023-0071); this one holds only what
//! `auth.jwt_algorithm` can name (HMAC, EdDSA over Ed25519, ES256), and
//! refuses anything else, or a key of another kind than the algorithm.
//!
//! Keys reach it as `keys.rs` builds them: an Ed25519 signing key as its
//! 32-byte seed and verifying key as its 32 bytes; a P-256 signing key as
//! its 32-byte scalar and verifying key as an uncompressed SEC1 point.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use sha2::{Sha256, Sha384, Sha512};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes this module jsonwebtoken's provider for the process. Idempotent;
/// called before any key is used.
pub fn install() {
    // An `Err` means a provider is in place already: this one, from an
    // earlier call (nothing else in the process installs one).
    let _ = PROVIDER.install_default();
}

/// HMAC over one of the SHA-2 family, keyed once and cloned per message.
#[derive(Clone)]
enum Keyed {
    HS256(Hmac<Sha256>),
    HS384(Hmac<Sha384>),
    HS512(Hmac<Sha512>),
}

impl Keyed {
    fn new(algorithm: Algorithm, secret: &[u8]) -> Result<Self> {
        // HMAC takes a key of any length; `auth.jwt_secret`'s minimum
        // length is checked by the settings.
        let invalid = |_| jsonwebtoken::errors::Error::from(ErrorKind::InvalidKeyFormat);
        Ok(match algorithm {
            Algorithm::HS256 => Self::HS256(KeyInit::new_from_slice(secret).map_err(invalid)?),
            Algorithm::HS384 => Self::HS384(KeyInit::new_from_slice(secret).map_err(invalid)?),
            Algorithm::HS512 => Self::HS512(KeyInit::new_from_slice(secret).map_err(invalid)?),
            _ => return Err(ErrorKind::InvalidAlgorithm.into()),
        })
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Self::HS256(_) => Algorithm::HS256,
            Self::HS384(_) => Algorithm::HS384,
            Self::HS512(_) => Algorithm::HS512,
        }
    }

    fn mac(&self, message: &[u8]) -> Vec<u8> {
        match self.clone() {
            Self::HS256(mac) => mac.chain_update(message).finalize().into_bytes().to_vec(),
            Self::HS384(mac) => mac.chain_update(message).finalize().into_bytes().to_vec(),
            Self::HS512(mac) => mac.chain_update(message).finalize().into_bytes().to_vec(),
        }
    }

    /// Compares in constant time.
    fn check(&self, message: &[u8], tag: &[u8]) -> bool {
        match self.clone() {
            Self::HS256(mac) => mac.chain_update(message).verify_slice(tag).is_ok(),
            Self::HS384(mac) => mac.chain_update(message).verify_slice(tag).is_ok(),
            Self::HS512(mac) => mac.chain_update(message).verify_slice(tag).is_ok(),
        }
    }
}

impl Signer<Vec<u8>> for Keyed {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(self.mac(message))
    }
}

impl Verifier<Vec<u8>> for Keyed {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        if self.check(message, tag) {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtSigner for Keyed {
    fn algorithm(&self) -> Algorithm {
        Keyed::algorithm(self)
    }
}

impl JwtVerifier for Keyed {
    fn algorithm(&self) -> Algorithm {
        Keyed::algorithm(self)
    }
}

/// Ed25519 (`EdDSA`) or P-256 with SHA-256 (`ES256`), signing.
enum Signing {
    Ed(ed25519_dalek::SigningKey),
    Es(p256::ecdsa::SigningKey),
}

/// Ed25519 or P-256, verifying.
enum Verifying {
    Ed(ed25519_dalek::VerifyingKey),
    Es(p256::ecdsa::VerifyingKey),
}

impl Signer<Vec<u8>> for Signing {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(match self {
            Self::Ed(key) => key.try_sign(message)?.to_bytes().to_vec(),
            Self::Es(key) => {
                let signature: p256::ecdsa::Signature = key.try_sign(message)?;
                // The low-S form, the only one verification accepts.
                signature
                    .normalize_s()
                    .unwrap_or(signature)
                    .to_bytes()
                    .to_vec()
            }
        })
    }
}

impl JwtSigner for Signing {
    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed(_) => Algorithm::EdDSA,
            Self::Es(_) => Algorithm::ES256,
        }
    }
}

impl Verifier<Vec<u8>> for Verifying {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        match self {
            Self::Ed(key) => {
                key.verify_strict(message, &ed25519_dalek::Signature::from_slice(tag)?)
            }
            Self::Es(key) => {
                let signature = p256::ecdsa::Signature::from_slice(tag)?;
                // Only the low-S form: each token has one valid signature.
                if signature.normalize_s().is_some() {
                    return Err(signature::Error::new());
                }
                key.verify(message, &signature)
            }
        }
    }
}

impl JwtVerifier for Verifying {
    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed(_) => Algorithm::EdDSA,
            Self::Es(_) => Algorithm::ES256,
        }
    }
}

fn invalid_key(_: impl std::fmt::Debug) -> jsonwebtoken::errors::Error {
    ErrorKind::InvalidKeyFormat.into()
}

fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let bytes = key.as_bytes();
    Ok(match (algorithm, key.family()) {
        (_, AlgorithmFamily::Hmac) => Box::new(Keyed::new(*algorithm, bytes)?),
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => {
            let seed: &[u8; 32] = bytes.try_into().map_err(invalid_key)?;
            Box::new(Signing::Ed(ed25519_dalek::SigningKey::from_bytes(seed)))
        }
        (Algorithm::ES256, AlgorithmFamily::Ec) => {
            let key = p256::ecdsa::SigningKey::from_slice(bytes).map_err(invalid_key)?;
            Box::new(Signing::Es(key))
        }
        _ => return Err(ErrorKind::InvalidKeyFormat.into()),
    })
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let bytes = key.try_get_as_bytes()?;
    Ok(match (algorithm, key.family()) {
        (_, AlgorithmFamily::Hmac) => Box::new(Keyed::new(*algorithm, bytes)?),
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => {
            let public: &[u8; 32] = bytes.try_into().map_err(invalid_key)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(public).map_err(invalid_key)?;
            Box::new(Verifying::Ed(key))
        }
        (Algorithm::ES256, AlgorithmFamily::Ec) => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(invalid_key)?;
            Box::new(Verifying::Es(key))
        }
        _ => return Err(ErrorKind::InvalidKeyFormat.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: the published HMAC-SHA-256/384/512 of
    /// "what do ya want for nothing?" under the key "Jefe".
    #[test]
    fn macs_match_the_published_test_vectors() {
        let message = b"what do ya want for nothing?";
        let cases = [
            (
                Algorithm::HS256,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                Algorithm::HS384,
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
                 8e2240ca5e69e2c78b3239ecfab21649",
            ),
            (
                Algorithm::HS512,
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
                 9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
        ];
        for (algorithm, expected) in cases {
            let keyed = Keyed::new(algorithm, b"Jefe").unwrap();
            let tag = keyed.try_sign(message).unwrap();
            let hex: String = tag.iter().map(|byte| format!("{byte:02x}")).collect();
            assert_eq!(hex, expected, "{algorithm:?}");
            assert!(keyed.verify(message, &tag).is_ok());
            let mut forged = tag.clone();
            forged[0] ^= 1;
            assert!(keyed.verify(message, &forged).is_err(), "{algorithm:?}");
        }
    }

    #[test]
    fn an_hmac_key_serves_no_other_algorithm_nor_a_key_another() {
        for algorithm in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            assert!(Keyed::new(algorithm, b"secret").is_err(), "{algorithm:?}");
            let key = EncodingKey::from_secret(b"secret");
            assert!(signer_factory(&algorithm, &key).is_err());
        }
        let ed = EncodingKey::from_ed_der(&[7; 32]);
        assert!(signer_factory(&Algorithm::EdDSA, &ed).is_ok());
        assert!(signer_factory(&Algorithm::ES256, &ed).is_err());
        assert!(signer_factory(&Algorithm::RS256, &EncodingKey::from_rsa_der(&[1; 64])).is_err());
    }

    #[test]
    fn an_es256_signature_verifies_only_in_its_low_s_form() {
        let secret = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let point = secret.verifying_key().to_encoded_point(false);
        let signer = signer_factory(
            &Algorithm::ES256,
            &EncodingKey::from_ec_der(&secret.to_bytes()),
        )
        .unwrap();
        let verifier = verifier_factory(
            &Algorithm::ES256,
            &DecodingKey::from_ec_der(point.as_bytes()),
        )
        .unwrap();
        let message = b"header.claims";
        let tag = signer.try_sign(message).unwrap();
        let signature = p256::ecdsa::Signature::from_slice(&tag).unwrap();
        let (r, s) = signature.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();

        assert!(verifier.verify(message, &tag).is_ok());
        assert!(verifier.verify(message, &high.to_bytes().to_vec()).is_err());
        assert!(
            verifier.verify(message, &tag[..63].to_vec()).is_err(),
            "no panic either"
        );
    }
}
