//! Access tokens: JWTs that name a server-side session. The signature proves
//! who issued a token; the session decides whether it still works.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::JwtAlgorithm;
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
}

/// Tokens remembered as verified before they are forgotten all at once.
const VERIFIED_CAPACITY: usize = 10_000;

/// Signs and verifies tokens with one key and one pinned algorithm.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
    validation: Validation,
    issuer: String,
    /// Tokens whose signature was checked, with their claims: a client
    /// uses its token again and again, and a lookup costs less than the
    /// signature and the JSON. Keyed by the whole token, so any change to
    /// one is a miss; expiry is still checked at every use.
    verified: Mutex<HashMap<Box<str>, Claims>>,
}

impl TokenKeys {
    pub fn new(secret: &SecretString, algorithm: JwtAlgorithm, issuer: &str) -> Self {
        super::signing::install();
        let algorithm = match algorithm {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::HS384 => Algorithm::HS384,
            JwtAlgorithm::HS512 => Algorithm::HS512,
        };
        let secret = secret.expose_secret().as_bytes();
        // `Validation::new` accepts this one algorithm and nothing else, so a
        // token cannot choose `none` or another key type for itself.
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Expiry is checked against the service's clock in `verify`.
        validation.validate_exp = false;
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            header: Header::new(algorithm),
            validation,
            issuer: issuer.to_owned(),
            verified: Mutex::default(),
        }
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
        Ok(jsonwebtoken::encode(&self.header, &claims, &self.encoding)?)
    }

    /// Checks signature, algorithm, issuer and expiry at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, TokenError> {
        let remembered = self.verified().get(token).cloned();
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                let claims =
                    jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
                let mut verified = self.verified();
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

    fn verified(&self) -> MutexGuard<'_, HashMap<Box<str>, Claims>> {
        // Only ever inserted into or cleared whole: a poisoned lock still
        // holds verified tokens only.
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    const SECRET: &str = "unit-test-secret-unit-test-secret!";

    fn keys() -> TokenKeys {
        TokenKeys::new(&SECRET.into(), JwtAlgorithm::HS256, "tollgate")
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
        let other_issuer = TokenKeys::new(&SECRET.into(), JwtAlgorithm::HS256, "someone-else");
        let other_key = TokenKeys::new(
            &"another-secret-another-secret-xx!".into(),
            JwtAlgorithm::HS256,
            "tollgate",
        );
        let other_alg = TokenKeys::new(&SECRET.into(), JwtAlgorithm::HS512, "tollgate");
        assert!(other_issuer.verify(&token, 1_001).is_err());
        assert!(other_key.verify(&token, 1_001).is_err());
        assert!(other_alg.verify(&token, 1_001).is_err());
    }
}
