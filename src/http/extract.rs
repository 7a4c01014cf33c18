//! The extractors that say who is calling. A handler that takes
//! [`Authenticated`] cannot run without a live session, and every use
//! reinflates it; one that takes [`ServiceCredential`] cannot run for a
//! caller without `auth.introspection_secret`.

use std::net::IpAddr;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use futures_util::future::{LocalBoxFuture, Ready, ready};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::views::UserView;
use crate::accounts::{CountedTry, Limit, address_key};
use crate::auth::Claims;
use crate::config::Network;
use crate::domain::{Origin, Session, TouchOutcome};

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

/// A resource server that presented `auth.introspection_secret`, as its
/// bearer token or as the password of HTTP Basic credentials (RFC 7662
/// clients send the latter; the user part names the client, for the log):
/// what introspection and `/validateToken` demand.
pub struct ServiceCredential;

/// Longest client name from Basic credentials that is logged.
const MAX_LOGGED_CLIENT: usize = 64;

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
        let presented = match (bearer_token(req), basic_credentials(req)) {
            (Some(token), _) => token.to_owned(),
            (None, Some((client, password))) => {
                let client: String = client
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_LOGGED_CLIENT)
                    .collect();
                tracing::info!(client, "service credential presented by");
                password
            }
            (None, None) => return ready(Err(ApiError::missing_credentials())),
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

/// The credentials of an `Authorization: <scheme> <credentials>` header
/// (scheme in any case), if the request has one of that scheme.
fn authorization<'r>(req: &'r HttpRequest, wanted: &str) -> Option<&'r str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case(wanted)
        .then(|| credentials.trim())
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    authorization(req, "bearer")
}

/// The user and password of an `Authorization: Basic` header (RFC 7617),
/// if it decodes as base64 of UTF-8 `user:password`.
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = authorization(req, "basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
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

impl AppState {
    /// Counts a try of `limit` for the client's address.
    pub async fn limit_address(
        &self,
        req: &HttpRequest,
        limit: Limit,
    ) -> Result<Option<CountedTry>, ApiError> {
        let Some(address) = client_address(req, &self.trusted_proxies) else {
            return Ok(None);
        };
        Ok(self.limits.take(limit, &address_key(address)).await?)
    }

    /// Where a session opened by this request comes from, as its user will
    /// see it listed.
    pub fn origin(&self, req: &HttpRequest) -> Origin {
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok());
        Origin::new(user_agent, client_address(req, &self.trusted_proxies))
    }
}

/// The client's address, for the per-address limits: the peer's, unless
/// the peer is a trusted proxy, in which case the nearest address in
/// `X-Forwarded-For` that is not one (read from the right, as each proxy
/// appends the peer it saw; what lies left of it the client could write).
pub fn client_address(req: &HttpRequest, trusted: &[Network]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let is_trusted = |address: &IpAddr| trusted.iter().any(|network| network.contains(address));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    // Right to left, through the trusted proxies, to the first hop that
    // is not one; a hop that does not parse ends the walk.
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(address) = hop.parse::<IpAddr>() else {
            break;
        };
        client = address;
        if !is_trusted(&address) {
            break;
        }
    }
    Some(client)
}
