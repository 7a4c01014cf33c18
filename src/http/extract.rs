//! The extractors that say who is calling. A handler that takes
//! [`Authenticated`] cannot run without a live session, and every use
//! reinflates it; one that takes [`ServiceCredential`] cannot run for a
//! caller without `auth.introspection_secret`.

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use futures_util::future::{LocalBoxFuture, Ready, ready};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::views::UserView;
use crate::auth::Claims;
use crate::domain::{Session, TouchOutcome};

/// The caller's verified token and its session, just reinflated.
pub struct Authenticated {
    pub claims: Claims,
    pub session: Session,
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req).map(str::to_owned);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no AppState")))?;
            let token = token.ok_or_else(ApiError::missing_credentials)?;
            state.authenticate(&token).await
        })
    }
}

/// A resource server that presented `auth.introspection_secret` as its
/// bearer token: what introspection and `/validateToken` demand.
pub struct ServiceCredential;

impl FromRequest for ServiceCredential {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let secret = req
            .app_data::<web::Data<AppState>>()
            .and_then(|state| state.introspection_secret.as_ref());
        let Some(secret) = secret else {
            return ready(Err(ApiError::new(
                ErrorCode::IntrospectionDisabled,
                "introspection is disabled: no auth.introspection_secret is configured",
            )));
        };
        let Some(presented) = bearer_token(req) else {
            return ready(Err(ApiError::missing_credentials()));
        };
        // Digests have one length whatever was sent, so the comparison's
        // time says nothing about the secret, not even its length.
        let matches: bool = Sha256::digest(presented.as_bytes())
            .ct_eq(&Sha256::digest(secret.expose_secret().as_bytes()))
            .into();
        ready(if matches {
            Ok(Self)
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "wrong introspection credential",
            ))
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any
/// case), if the request has one.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl AppState {
    /// The caller's profile: kept with the session where sessions are in
    /// Redis, else read from the users.
    pub async fn profile(&self, auth: &Authenticated) -> Result<UserView, ApiError> {
        if let Some(profile) = self.sessions.profile(auth.session.id) {
            return Ok(UserView::from(&*profile));
        }
        Ok(UserView::from(
            self.registry.user(auth.session.user_id).await?,
        ))
    }

    /// Verifies `token` and reinflates its session. Every refusal is the
    /// same `invalid_token` to the client; the reason goes to the log.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, ApiError> {
        let claims = self
            .tokens
            .verify(token, self.clock.now().timestamp())
            .map_err(|err| {
                tracing::debug!(reason = %err, "token refused");
                ApiError::invalid_token()
            })?;
        match self
            .sessions
            .touch(claims.session_id(), claims.user_id())
            .await?
        {
            TouchOutcome::Live(session) => Ok(Authenticated { claims, session }),
            outcome => {
                tracing::debug!(?outcome, "session refused");
                Err(ApiError::invalid_token())
            }
        }
    }
}
