//! The authentication extractor: a handler that takes [`Authenticated`]
//! cannot run without a live session, and every use reinflates it.

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use futures_util::future::LocalBoxFuture;

use super::AppState;
use crate::auth::Claims;
use crate::domain::{Session, TouchOutcome};
use crate::error::{ApiError, ErrorCode};

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
            let state =
                state.ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
            let token = token.ok_or_else(ApiError::missing_credentials)?;
            state.authenticate(&token).await
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
