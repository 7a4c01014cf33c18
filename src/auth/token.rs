//! Access tokens: JWTs that name a server-side session. The signature proves
//! who issued a token; the session decides whether it still works.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::{Jwk, Key};
use crate::domain::{Session, SessionId, UserId};

/// The claims of a Tollgate access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: `auth.issuer`.
    pub iss: String,
    /// The user.
    pub sub: Uuid,
    /// The session the token is bound to.
    pub sid: Uuid,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Absolute expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// This token's own identifier.
    pub jti: Uuid,
}

impl Claims {
    pub fn user_id(&self) -> UserId {
        UserId(self.sub)
    }

    pub fn session_id(&self) -> SessionId {
        SessionId(self.sid)
    }
}

/// Why a token was refused. Clients get one answer for all of these; the
/// variants exist for logs and tests.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed or its signature, algorithm or issuer is wrong: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token expired")]
    Expired,
    #[error("token names a key that is not in the key set")]
    UnknownKey,
}

/// The key tokens are signed with and the earlier ones still accepted.
#[derive(Debug)]
pub struct KeyRing {
    pub current: Key,
    /// Accepted for verification, never used to sign.
    pub previous: Vec<Key>,
}

impl KeyRing {
    pub fn new(current: Key, previous: Vec<Key>) -> Self {
        Self { current, previous }
    }

    /// The public keys, current first, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Vec<Jwk> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .filter_map(|key| key.public.clone())
            .collect()
    }
}

/// A key ring with what signing and verifying with it need, made once.
struct Loaded {
    ring: KeyRing,
    header: Header,
    /// By key, in the ring's order (current first): each pins its key's
    /// algorithm, so a token cannot choose another for itself.
    validations: Vec<Validation>,
    /// Tokens whose signature one of these keys checked, with their
    /// claims: a client uses its token again and again, and a lookup costs
    /// less than the signature and the JSON. Keyed by the whole token, so
    /// any change to one is a miss; expiry is still checked at every use.
    /// Kept with the keys, so a reload drops it in the same step: no
    /// verification by a removed key can be remembered after.
    verified: Mutex<HashMap<Box<str>, Claims>>,
}

impl Loaded {
    fn new(ring: KeyRing, issuer: &str) -> Self {
        let mut header = Header::new(ring.current.algorithm);
        header.kid = Some(ring.current.kid.clone());
        let previous = ring.previous.iter().map(|key| (key, true));
        let validations = std::iter::once((&ring.current, false))
            .chain(previous)
            .map(|(key, previous)| {
                // `Validation::new` accepts this one algorithm and nothing
                // else: no `none`, no other key type.
                let mut validation = Validation::new(key.algorithm);
                // A previous HMAC secret may have signed with any of the
                // three (a file says nothing of which); all are HMAC under
                // a secret, so none lets a token pick another kind of key.
                if previous && key.public.is_none() {
                    validation.algorithms =
                        vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
                }
                validation.set_issuer(&[issuer]);
                validation.set_required_spec_claims(&["exp", "iss", "sub"]);
                // Expiry is checked against the service's clock in `verify`.
                validation.validate_exp = false;
                validation.leeway = 0;
                validation
            })
            .collect();
        Self {
            ring,
            header,
            validations,
            verified: Mutex::default(),
        }
    }

    fn verified(&self) -> MutexGuard<'_, HashMap<Box<str>, Claims>> {
        // Only ever inserted into or cleared whole: a poisoned lock still
        // holds verified tokens only.
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key a token's header names, with its validation. A token with
    /// no `kid` (issued before tokens carried one) is checked against the
    /// current key if that is an HMAC secret, as it was then.
    fn key_for(&self, kid: Option<&str>) -> Option<(&Key, &Validation)> {
        let keys = std::iter::once(&self.ring.current).chain(&self.ring.previous);
        match kid {
            Some(kid) => keys.zip(&self.validations).find(|(key, _)| key.kid == kid),
            None => Some((&self.ring.current, &self.validations[0]))
                .filter(|(key, _)| key.public.is_none()),
        }
    }
}

/// Tokens remembered as verified before they are forgotten all at once.
const VERIFIED_CAPACITY: usize = 10_000;

/// Signs tokens with the current key and verifies them with the key their
/// `kid` names; the ring is swapped whole on a reload.
pub struct TokenKeys {
    loaded: RwLock<Arc<Loaded>>,
    issuer: String,
}

impl TokenKeys {
    pub fn new(ring: KeyRing, issuer: &str) -> Self {
        super::signing::install();
        Self {
            loaded: RwLock::new(Arc::new(Loaded::new(ring, issuer))),
            issuer: issuer.to_owned(),
        }
    }

    /// Swaps in a re-read key ring: new tokens are signed with its current
    /// key, and a key no longer in it verifies nothing from now on.
    pub fn reload(&self, ring: KeyRing) {
        let loaded = Arc::new(Loaded::new(ring, &self.issuer));
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = loaded;
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The public keys, current first.
    pub fn jwks(&self) -> Vec<Jwk> {
        self.loaded().ring.jwks()
    }

    /// The algorithm and `kid` new tokens are signed with.
    pub fn signing(&self) -> (Algorithm, String) {
        let loaded = self.loaded();
        (
            loaded.ring.current.algorithm,
            loaded.ring.current.kid.clone(),
        )
    }

    /// Issues the token for `session`: issued when the session was created,
    /// expiring at its absolute limit.
    pub fn issue(&self, session: &Session) -> Result<String, TokenError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: session.user_id.0,
            sid: session.id.0,
            iat: session.created_at.timestamp(),
            exp: session.absolute_expires_at.timestamp(),
            jti: Uuid::new_v4(),
        };
        let loaded = self.loaded();
        Ok(jsonwebtoken::encode(
            &loaded.header,
            &claims,
            &loaded.ring.current.encoding,
        )?)
    }

    /// Checks signature, algorithm, issuer and expiry at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, TokenError> {
        let loaded = self.loaded();
        let remembered = loaded.verified().get(token).cloned();
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                let header = jsonwebtoken::decode_header(token)?;
                let (key, validation) = loaded
                    .key_for(header.kid.as_deref())
                    .ok_or(TokenError::UnknownKey)?;
                let claims =
                    jsonwebtoken::decode::<Claims>(token, &key.decoding, validation)?.claims;
                let mut verified = loaded.verified();
                if verified.len() >= VERIFIED_CAPACITY {
                    verified.clear();
                }
                verified.insert(token.into(), claims.clone());
                claims
            }
        };
        if now_secs >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    use crate::auth::keys::generate;
    use crate::config::JwtAlgorithm;

    const SECRET: &str = "unit-test-secret-unit-test-secret!";

    fn hmac(secret: &str, algorithm: JwtAlgorithm, issuer: &str) -> TokenKeys {
        let ring = KeyRing::new(Key::hmac(algorithm, &secret.into()), Vec::new());
        TokenKeys::new(ring, issuer)
    }

    fn keys() -> TokenKeys {
        hmac(SECRET, JwtAlgorithm::HS256, "tollgate")
    }

    fn new_key(algorithm: JwtAlgorithm) -> Key {
        let text = generate(algorithm);
        let dir = std::env::temp_dir().join(format!("tollgate-key-{}", Uuid::new_v4()));
        std::fs::write(&dir, text.as_bytes()).unwrap();
        let key = Key::read(algorithm, &dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        key
    }

    fn session(created: i64, absolute: i64) -> Session {
        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        Session {
            id: SessionId::random(),
            user_id: UserId::new(),
            created_at: at(created),
            last_seen_at: at(created),
            expires_at: at(created + 30),
            absolute_expires_at: at(absolute),
            refresh_count: 0,
        }
    }

    #[test]
    fn an_issued_token_verifies_with_its_session_and_user() {
        let session = session(1_000, 4_600);
        let claims = keys()
            .verify(&keys().issue(&session).unwrap(), 1_001)
            .unwrap();
        assert_eq!(claims.session_id(), session.id);
        assert_eq!(claims.user_id(), session.user_id);
        assert_eq!(
            (claims.iat, claims.exp, claims.iss.as_str()),
            (1_000, 4_600, "tollgate")
        );
    }

    #[test]
    fn a_token_is_refused_from_its_expiry_on() {
        let token = keys().issue(&session(1_000, 2_000)).unwrap();
        assert!(keys().verify(&token, 1_999).is_ok());
        assert!(matches!(
            keys().verify(&token, 2_000),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn a_token_verified_before_is_still_refused_once_expired_or_altered() {
        let keys = keys();
        let token = keys.issue(&session(1_000, 2_000)).unwrap();
        assert!(keys.verify(&token, 1_001).is_ok());
        assert!(matches!(
            keys.verify(&token, 2_000),
            Err(TokenError::Expired)
        ));
        let mut altered = token.clone();
        altered.push('x');
        assert!(keys.verify(&altered, 1_001).is_err());
    }

    #[test]
    fn another_issuer_or_key_or_algorithm_is_refused() {
        let token = keys().issue(&session(1_000, 4_600)).unwrap();
        let other_issuer = hmac(SECRET, JwtAlgorithm::HS256, "someone-else");
        let other_key = hmac(
            "another-secret-another-secret-xx!",
            JwtAlgorithm::HS256,
            "tollgate",
        );
        let other_alg = hmac(SECRET, JwtAlgorithm::HS512, "tollgate");
        assert!(other_issuer.verify(&token, 1_001).is_err());
        assert!(other_key.verify(&token, 1_001).is_err());
        assert!(other_alg.verify(&token, 1_001).is_err());
    }

    #[test]
    fn each_algorithm_signs_with_its_kid_and_verifies_only_with_its_key() {
        for algorithm in [
            JwtAlgorithm::EdDSA,
            JwtAlgorithm::ES256,
            JwtAlgorithm::HS256,
        ] {
            let keys = TokenKeys::new(KeyRing::new(new_key(algorithm), Vec::new()), "tollgate");
            let token = keys.issue(&session(1_000, 4_600)).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, Algorithm::from(algorithm));
            assert_eq!(header.kid, Some(keys.signing().1));
            assert!(keys.verify(&token, 1_001).is_ok(), "{algorithm:?}");
            let stranger = TokenKeys::new(KeyRing::new(new_key(algorithm), Vec::new()), "tollgate");
            assert!(matches!(
                stranger.verify(&token, 1_001),
                Err(TokenError::UnknownKey)
            ));
        }
    }

    #[test]
    fn a_previous_key_verifies_until_it_is_dropped_and_never_signs() {
        let old = new_key(JwtAlgorithm::EdDSA);
        let old_kid = old.kid.clone();
        let keys = TokenKeys::new(KeyRing::new(old.clone(), Vec::new()), "tollgate");
        let old_token = keys.issue(&session(1_000, 4_600)).unwrap();

        keys.reload(KeyRing::new(new_key(JwtAlgorithm::ES256), vec![old]));
        let new_token = keys.issue(&session(1_000, 4_600)).unwrap();
        let accepted = keys.verify(&old_token, 1_001).is_ok();
        let new_kid = jsonwebtoken::decode_header(&new_token).unwrap().kid;
        keys.reload(KeyRing::new(new_key(JwtAlgorithm::ES256), Vec::new()));

        assert!(accepted, "the previous key still verifies");
        assert_ne!(new_kid.as_deref(), Some(old_kid.as_str()));
        assert!(matches!(
            keys.verify(&old_token, 1_001),
            Err(TokenError::UnknownKey)
        ));
    }

    #[test]
    fn a_token_choosing_another_algorithm_for_the_key_is_refused() {
        use base64::Engine as _;
        use hmac::Mac as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let key = new_key(JwtAlgorithm::EdDSA);
        let (kid, public) = (key.kid.clone(), key.public.clone().unwrap());
        let keys = TokenKeys::new(KeyRing::new(key, Vec::new()), "tollgate");
        let claims = format!(
            r#"{{"iss":"tollgate","sub":"{}","sid":"{}","iat":1000,"exp":4600,"jti":"{}"}}"#,
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4()
        );
        // HS256 keyed with the public key a JWKS publishes, and `none`.
        let forged_hs = {
            let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
            let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&public.x)
                .unwrap();
            let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret)
                .unwrap()
                .chain_update(signed.as_bytes())
                .finalize()
                .into_bytes();
            format!("{signed}.{}", b64(&mac))
        };
        let none = {
            let header = format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#);
            format!("{}.{}.", b64(header.as_bytes()), b64(claims.as_bytes()))
        };
        assert!(keys.verify(&forged_hs, 1_001).is_err());
        assert!(keys.verify(&none, 1_001).is_err());
    }

    #[test]
    fn a_previous_hmac_secret_verifies_whichever_hmac_it_signed_with() {
        let secret = "a-previous-secret-of-at-least-32-bytes!";
        let old = TokenKeys::new(
            KeyRing::new(Key::hmac(JwtAlgorithm::HS384, &secret.into()), Vec::new()),
            "tollgate",
        );
        let token = old.issue(&session(1_000, 4_600)).unwrap();
        let file = std::env::temp_dir().join(format!("tollgate-key-{}", Uuid::new_v4()));
        std::fs::write(&file, secret).unwrap();
        let previous = Key::read_any(&file).unwrap();
        std::fs::remove_file(&file).unwrap();

        let rotated = TokenKeys::new(
            KeyRing::new(new_key(JwtAlgorithm::EdDSA), vec![previous]),
            "tollgate",
        );

        assert!(rotated.verify(&token, 1_001).is_ok());
    }
}
