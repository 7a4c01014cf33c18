//! `/api/v1/auth/*`: sign-up, sign-in, sign-out, sessions, password change
//! and token introspection.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{AppState, Authenticated, extract::bearer_token, users::UserView};
use crate::actors::{ChangePassword, GetUser, Grant, RegistryError, SignIn, SignUp};
use crate::domain::{Email, InvalidInput, Login, Password, Session, Username};
use crate::error::{ApiError, ErrorCode};
use crate::events::{Event, RevokeReason};

#[derive(Deserialize)]
pub struct SignUpBody {
    username: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
pub struct SignInBody {
    /// A username, or an e-mail address (recognised by its `@`).
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
    password: String,
}

#[derive(Deserialize)]
pub struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize)]
pub struct IntrospectBody {
    token: String,
}

/// What a successful sign-up or sign-in returns.
#[derive(Serialize)]
pub struct TokenGrant {
    access_token: String,
    token_type: &'static str,
    /// Seconds until the token's absolute expiry. The session lapses sooner
    /// if left idle: see `session.expires_at`.
    expires_in: i64,
    session: Session,
    user: UserView,
}

/// RFC 7662 introspection response.
#[derive(Serialize)]
pub struct Introspection {
    active: bool,
    #[serde(flatten)]
    details: Option<ActiveToken>,
}

#[derive(Serialize)]
pub struct ActiveToken {
    sub: Uuid,
    /// Absent when the user store could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    sid: Uuid,
    exp: i64,
    iat: i64,
    refresh_count: u32,
    expires_at: DateTime<Utc>,
}

pub async fn sign_up(
    state: web::Data<AppState>,
    body: web::Json<SignUpBody>,
) -> Result<HttpResponse, ApiError> {
    let grant = signed_up(&state, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, "/api/v1/users/me"))
        .json(token_grant(&state, grant)?))
}

/// Registers the user a sign-up body describes and opens their session.
pub async fn signed_up(state: &AppState, body: SignUpBody) -> Result<Grant, ApiError> {
    let username = Username::parse(&body.username);
    let password = Password::parse(&body.password, "password");
    let email = body.email.as_deref().map(Email::parse).transpose();
    let (username, password, email) = match (username, password, email) {
        (Ok(username), Ok(password), Ok(email)) => (username, password, email),
        (u, p, e) => return Err(ApiError::invalid_fields([u.err(), p.err(), e.err()])),
    };
    let sign_up = SignUp {
        username,
        email,
        password,
    };
    Ok(state.registry.send(sign_up).await??)
}

pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<SignInBody>,
) -> Result<web::Json<TokenGrant>, ApiError> {
    Ok(web::Json(signed_in(&req, &state, body.into_inner()).await?))
}

/// Checks the credentials of a sign-in body and issues a token, unless the
/// client's address or the login has failed too often lately.
pub async fn signed_in(
    req: &HttpRequest,
    state: &AppState,
    body: SignInBody,
) -> Result<TokenGrant, ApiError> {
    let login = match (body.username, body.email) {
        (Some(name), None) if name.contains('@') => Email::parse(&name).map(Login::Email),
        (Some(name), None) => Username::parse(&name).map(Login::Username),
        (None, Some(email)) => Email::parse(&email).map(Login::Email),
        (Some(_), Some(_)) => Err(InvalidInput::new(
            "username",
            "send a username or an email, not both",
        )),
        (None, None) => Err(InvalidInput::new(
            "username",
            "a username or an email is required",
        )),
    };
    let password = Password::parse(&body.password, "password");
    let (login, password) = match (login, password) {
        (Ok(login), Ok(password)) => (login, password),
        (login, password) => return Err(ApiError::invalid_fields([login.err(), password.err()])),
    };
    // The peer, not a forwarded-for header a client could write itself.
    let address = req.peer_addr().map(|peer| peer.ip());
    let (account, began_ms) = (login.folded(), state.clock.now_millis());
    if let Err(seconds) = state.sign_ins.begin(address, &account, began_ms) {
        state.metrics.signin("rate_limited");
        return Err(ApiError::rate_limited(seconds));
    }
    let signed_in = state.registry.send(SignIn { login, password }).await;
    // Only wrong credentials count against the limits.
    if !matches!(&signed_in, Ok(Err(RegistryError::InvalidCredentials))) {
        state.sign_ins.forgive(address, &account, began_ms);
    }
    token_grant(state, signed_in??)
}

impl TokenGrant {
    pub fn access_token(&self) -> &str {
        &self.access_token
    }
}

/// Issues the token for a freshly opened session.
fn token_grant(state: &AppState, (user, session): Grant) -> Result<TokenGrant, ApiError> {
    let access_token = state
        .tokens
        .issue(&session)
        .map_err(|e| ApiError::with_cause(ErrorCode::Internal, "internal error", e))?;
    // The token's lifetime, `exp - iat`, both whole seconds.
    let expires_in = session.absolute_expires_at.timestamp() - session.created_at.timestamp();
    Ok(TokenGrant {
        access_token,
        token_type: "Bearer",
        expires_in,
        session,
        user: user.into(),
    })
}

pub async fn sign_out(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let revoked = state.sessions.revoke(auth.session.id).await?;
    state.events.publish(Event::SessionsRevoked {
        user_id: auth.session.user_id,
        session_id: Some(auth.session.id),
        sessions: usize::from(revoked),
        reason: RevokeReason::SignOut,
    });
    Ok(HttpResponse::NoContent().finish())
}

pub async fn sign_out_all(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let user_id = auth.session.user_id;
    let revoked = state.sessions.revoke_user(user_id, None).await?;
    state.events.publish(Event::SessionsRevoked {
        user_id,
        session_id: None,
        sessions: revoked,
        reason: RevokeReason::SignOutAll,
    });
    Ok(HttpResponse::NoContent().finish())
}

pub async fn change_password(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: web::Json<ChangePasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let current = Password::parse(&body.current_password, "current_password");
    let new = Password::parse(&body.new_password, "new_password");
    let (current, new) = match (current, new) {
        (Ok(current), Ok(new)) => (current, new),
        (current, new) => return Err(ApiError::invalid_fields([current.err(), new.err()])),
    };
    let (user_id, keep) = (auth.session.user_id, auth.session.id);
    match state
        .registry
        .send(ChangePassword {
            user_id,
            keep,
            current,
            new,
        })
        .await?
    {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(RegistryError::InvalidCredentials) => Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "the current password is wrong",
        )),
        Err(err) => Err(err.into()),
    }
}

pub async fn current_session(auth: Authenticated) -> web::Json<Session> {
    web::Json(auth.session)
}

pub async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<IntrospectBody>,
) -> Result<web::Json<Introspection>, ApiError> {
    let details = introspection(&state, &req, &body.token).await?;
    Ok(web::Json(Introspection {
        active: details.is_some(),
        details,
    }))
}

/// What introspection finds of `token` for the service `req` comes from:
/// `None` when the token is not active. Refused without the service
/// credential, or with introspection disabled. An active answer reinflates
/// the session.
pub async fn introspection(
    state: &AppState,
    req: &HttpRequest,
    token: &str,
) -> Result<Option<ActiveToken>, ApiError> {
    let Some(secret) = &state.introspection_secret else {
        return Err(ApiError::new(
            ErrorCode::IntrospectionDisabled,
            "introspection is disabled: no auth.introspection_secret is configured",
        ));
    };
    let presented = bearer_token(req).ok_or_else(ApiError::missing_credentials)?;
    // Digests have one length whatever was sent, so the comparison's time
    // says nothing about the secret, not even its length.
    let matches: bool = Sha256::digest(presented.as_bytes())
        .ct_eq(&Sha256::digest(secret.expose_secret().as_bytes()))
        .into();
    if !matches {
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "wrong introspection credential",
        ));
    }
    let auth = match state.authenticate(token).await {
        Ok(auth) => auth,
        // Overload is not an answer about the token: a resource server
        // must not sign its user out because Tollgate was busy.
        Err(err) if err.code == ErrorCode::ServiceUnavailable => return Err(err),
        Err(_) => return Ok(None),
    };
    let username = match state.registry.send(GetUser(auth.session.user_id)).await? {
        Ok(user) => Some(user.username),
        Err(RegistryError::UnknownUser) => return Ok(None),
        Err(err) => {
            tracing::warn!(error = %err, "introspection answered without the username");
            None
        }
    };
    let (claims, session) = (auth.claims, auth.session);
    Ok(Some(ActiveToken {
        sub: claims.sub,
        username,
        sid: claims.sid,
        exp: claims.exp,
        iat: claims.iat,
        refresh_count: session.refresh_count,
        expires_at: session.expires_at,
    }))
}
