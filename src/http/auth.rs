//! `/api/v1/auth/*`: sign-up, sign-in, sign-out, sessions, password change
//! and token introspection.

use actix_web::{
    FromRequest, HttpMessage, HttpRequest, HttpResponse, dev::Payload, http::header, web,
};
use chrono::{DateTime, Utc};
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::openapi::{RefOr, Schema};
use uuid::Uuid;

use super::error::{ApiError, ErrorCode};
use super::extract::{Authenticated, ServiceCredential};
use super::views::{SessionView, UserView};
use super::{AppState, schema};
use crate::accounts::{AccountError, Grant, Limit};
use crate::auth::Jwk;
use crate::domain::{Credentials, PasswordChange, Registration, Session, SessionId};
use crate::events::{Event, RevokeReason};

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignUpBody {
    #[schema(schema_with = schema::username)]
    username: String,
    #[schema(schema_with = schema::password)]
    password: String,
    #[serde(default)]
    #[schema(schema_with = schema::optional_email, required = false)]
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

/// A username (or an e-mail address) or an e-mail address, exactly one of
/// them, and the password. Other members are ignored.
impl utoipa::PartialSchema for SignInBody {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::{AllOfBuilder, ObjectBuilder, OneOfBuilder};
        // `null` counts as absent: the choice is made on the members that
        // are strings.
        let fields = ObjectBuilder::new()
            .property("username", schema::nullable(schema::login()))
            .property("email", schema::nullable(schema::email()))
            .property("password", schema::password())
            .required("password");
        let exactly_one = OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .property("username", schema::login())
                    .required("username"),
            )
            .item(
                ObjectBuilder::new()
                    .property("email", schema::email())
                    .required("email"),
            );
        AllOfBuilder::new()
            .item(fields)
            .item(exactly_one)
            .description(Some(
                "A username (or an e-mail address, recognised by its '@') or an e-mail \
                 address, not both, and the password",
            ))
            .into()
    }
}

impl utoipa::ToSchema for SignInBody {}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ChangePasswordBody {
    #[schema(schema_with = schema::password)]
    current_password: String,
    #[schema(schema_with = schema::password)]
    new_password: String,
}

/// What introspection is asked about. RFC 7662 clients send it as a form
/// and may add `token_type_hint`, which is ignored.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct IntrospectBody {
    token: String,
}

/// The introspection body as JSON, or as the form RFC 7662 clients send.
pub struct IntrospectRequest(IntrospectBody);

impl FromRequest for IntrospectRequest {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if req
            .content_type()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        {
            let form = web::Form::<IntrospectBody>::from_request(req, payload);
            Box::pin(async move { Ok(Self(form.await?.into_inner())) })
        } else {
            let json = web::Json::<IntrospectBody>::from_request(req, payload);
            Box::pin(async move { Ok(Self(json.await?.into_inner())) })
        }
    }
}

/// What a successful sign-up or sign-in returns.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenGrant {
    access_token: String,
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the token's absolute expiry. The session lapses sooner
    /// if left idle: see `session.expires_at`.
    expires_in: i64,
    session: Session,
    user: UserView,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionList {
    /// The caller's live sessions, newest first (at most 200).
    items: Vec<SessionView>,
}

/// The caller's live sessions, with the device and address each was
/// opened from, so that a stolen or forgotten one can be told apart.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = SessionList, description = "The caller's sessions")))]
pub async fn list_sessions(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<web::Json<SessionList>, ApiError> {
    let listed = state.sessions.sessions_of(auth.session.user_id).await?;
    let current = Some(auth.session.id);
    Ok(web::Json(SessionList {
        items: listed
            .iter()
            .map(|listed| SessionView::new(listed, current))
            .collect(),
    }))
}

/// Ends one of the caller's sessions: "sign out that device".
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session's id, as listed")),
    responses(
        (status = 204, description = "That session is revoked"),
        (status = 404, description = "`not_found`: no live session of the caller has this id"),
    ))]
pub async fn revoke_session(
    state: web::Data<AppState>,
    auth: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such session");
    let id = SessionId(id.parse().map_err(|_| not_found())?);
    let user_id = auth.session.user_id;
    if !state.sessions.revoke(id, user_id).await? {
        return Err(not_found());
    }
    state.events.publish(Event::SessionsRevoked {
        user_id,
        session_id: Some(id),
        sessions: 1,
        reason: RevokeReason::SignOut,
    });
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JwkSet {
    /// The public keys tokens are signed with (first) or still accepted
    /// with; none while tokens are signed with an HMAC secret.
    keys: Vec<Jwk>,
}

/// The public keys of the signing key and of the previous keys, by `kid`,
/// for services that verify tokens themselves. A signature proves who a
/// token was issued to, not that its session is alive: for that, they
/// still introspect.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, body = JwkSet, description = "The key set (RFC 7517)")))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        // Short, so that a rotation reaches verifiers soon; they fetch
        // again on a `kid` they do not know anyway.
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(JwkSet {
            keys: state.tokens.jwks(),
        })
}

/// RFC 7662 introspection response: `{"active": false}` alone for a token
/// that is not active.
#[derive(Serialize)]
pub struct Introspection {
    active: bool,
    #[serde(flatten)]
    details: Option<ActiveToken>,
}

/// `active`, then the active token's members, present only when it is.
impl utoipa::PartialSchema for Introspection {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::{ObjectBuilder, Type};
        let mut object = match ActiveToken::schema() {
            RefOr::T(Schema::Object(object)) => object,
            _ => unreachable!("ActiveToken derives an object schema"),
        };
        object.required.clear();
        let active = ObjectBuilder::new().schema_type(Type::Boolean).build();
        object.properties.insert("active".to_owned(), active.into());
        object.required.push("active".to_owned());
        object.description =
            Some("RFC 7662: `{\"active\": false}` alone for a token that is not active".to_owned());
        RefOr::T(Schema::Object(object))
    }
}

impl utoipa::ToSchema for Introspection {}

#[derive(Serialize, utoipa::ToSchema)]
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

/// Registers a user and opens their first session.
#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth",
    request_body = SignUpBody,
    responses(
        (status = 201, body = TokenGrant, description = "Registered and signed in",
            headers(("location" = String, description = "/api/v1/users/me"))),
        (status = 409, description = "`username_taken`, `email_taken`"),
        (status = 429, description = "`rate_limited`: too many sign-ups from this address lately",
            headers(("retry-after" = u64, description = "Seconds until a try may succeed"))),
    ))]
pub async fn sign_up(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<SignUpBody>,
) -> Result<HttpResponse, ApiError> {
    let registration = body.registration()?;
    state.limit_address(&req, Limit::SignUpPerAddress).await?;
    let grant = state
        .registry
        .sign_up(registration, state.origin(&req))
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, "/api/v1/users/me"))
        .json(token_grant(&state, grant)?))
}

impl SignUpBody {
    /// The registration this body describes, every field checked.
    pub fn registration(&self) -> Result<Registration, ApiError> {
        Ok(Registration::parse(
            &self.username,
            &self.password,
            self.email.as_deref(),
        )?)
    }
}

/// Checks a username or e-mail address and password; opens a session.
#[utoipa::path(post, path = "/api/v1/auth/signin", tag = "auth",
    request_body = SignInBody,
    responses(
        (status = 200, body = TokenGrant, description = "Signed in"),
        SignInRefusals,
    ))]
pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<SignInBody>,
) -> Result<web::Json<TokenGrant>, ApiError> {
    Ok(web::Json(signed_in(&req, &state, body.into_inner()).await?))
}

/// Why a sign-in is refused, through this route or the older `/login`.
/// Never built: it only describes the answers to the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum SignInRefusals {
    #[response(
        status = 401,
        description = "`invalid_credentials`: unknown user or wrong password, told apart by neither answer nor time"
    )]
    InvalidCredentials,
    #[response(
        status = 403,
        description = "`account_disabled`: the right password of an account an operator disabled"
    )]
    Disabled,
    #[response(status = 429, description = "`rate_limited`: too many failed sign-ins from this address or for this account",
        headers(("retry-after" = u64, description = "Seconds until a try may succeed")))]
    RateLimited,
}

/// Checks the credentials of a sign-in body and issues a token, unless the
/// client's address or the login has failed too often lately.
pub async fn signed_in(
    req: &HttpRequest,
    state: &AppState,
    body: SignInBody,
) -> Result<TokenGrant, ApiError> {
    let credentials = Credentials::parse(
        body.username.as_deref(),
        body.email.as_deref(),
        &body.password,
    )?;
    // Checked before anything else is spent on the request; the account's
    // own count is the account rules' (only they know whose it is).
    let counted = match state.limit_address(req, Limit::SignInPerAddress).await {
        Ok(counted) => counted,
        Err(err) => {
            state.metrics.signin("rate_limited");
            return Err(err);
        }
    };
    let signed_in = state.registry.sign_in(credentials, state.origin(req)).await;
    // Only wrong credentials count against the limits.
    if !matches!(&signed_in, Err(AccountError::InvalidCredentials)) {
        state.limits.give_back(counted).await;
    }
    token_grant(state, signed_in?)
}

impl TokenGrant {
    pub fn access_token(&self) -> &str {
        &self.access_token
    }
}

/// Issues the token for a freshly opened session.
fn token_grant(state: &AppState, (user, session): Grant) -> Result<TokenGrant, ApiError> {
    let access_token = state.tokens.issue(&session).map_err(ApiError::internal)?;
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

/// Ends the session the token belongs to.
#[utoipa::path(post, path = "/api/v1/auth/signout", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204, description = "The session is revoked")))]
pub async fn sign_out(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let revoked = state
        .sessions
        .revoke(auth.session.id, auth.session.user_id)
        .await?;
    state.events.publish(Event::SessionsRevoked {
        user_id: auth.session.user_id,
        session_id: Some(auth.session.id),
        sessions: usize::from(revoked),
        reason: RevokeReason::SignOut,
    });
    Ok(HttpResponse::NoContent().finish())
}

/// Ends every session of the caller, this one included.
#[utoipa::path(post, path = "/api/v1/auth/signout-all", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204, description = "Every session of the user is revoked")))]
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

/// Changes the caller's password; every other session of theirs ends.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth",
    security(("bearer" = [])),
    request_body = ChangePasswordBody,
    responses(
        (status = 204, description = "Changed; every other session is revoked"),
        (status = 401, description = "`invalid_credentials`: the current password is wrong"),
        (status = 429, description = "`rate_limited`: too many wrong current passwords lately",
            headers(("retry-after" = u64, description = "Seconds until a try may succeed"))),
    ))]
pub async fn change_password(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: web::Json<ChangePasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let change = PasswordChange::parse(&body.current_password, &body.new_password)?;
    let (user_id, keep) = (auth.session.user_id, auth.session.id);
    match state.registry.change_password(user_id, keep, change).await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(AccountError::InvalidCredentials) => Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "the current password is wrong",
        )),
        Err(err) => Err(err.into()),
    }
}

/// The caller's session, just reinflated by this very request.
#[utoipa::path(get, path = "/api/v1/auth/session", tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = Session, description = "The session")))]
pub async fn current_session(auth: Authenticated) -> web::Json<Session> {
    web::Json(auth.session)
}

/// RFC 7662 introspection for resource servers, which present
/// `auth.introspection_secret` as their bearer. An active token's session
/// is reinflated.
#[utoipa::path(post, path = "/api/v1/auth/introspect", tag = "auth",
    security(("service" = [])),
    security(("service_basic" = [])),
    request_body(content(
        (IntrospectBody = "application/json"),
        (IntrospectBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, body = Introspection, description = "Whether the token is active, and whose"),
        (status = 401, description = "`missing_credentials`, `invalid_credentials`: no or a wrong service credential; `introspection_disabled`: none is configured"),
    ))]
pub async fn introspect(
    state: web::Data<AppState>,
    service: ServiceCredential,
    IntrospectRequest(body): IntrospectRequest,
) -> Result<web::Json<Introspection>, ApiError> {
    let details = introspection(&state, service, &body.token).await?;
    Ok(web::Json(Introspection {
        active: details.is_some(),
        details,
    }))
}

/// What introspection finds of `token`, for a service that presented its
/// credential: `None` when the token is not active. An active answer
/// reinflates the session.
pub async fn introspection(
    state: &AppState,
    _: ServiceCredential,
    token: &str,
) -> Result<Option<ActiveToken>, ApiError> {
    let auth = match state.authenticate(token).await {
        Ok(auth) => auth,
        Err(err) if err.code == ErrorCode::InvalidToken => return Ok(None),
        // An outage or overload is not an answer about the token: a
        // resource server must not sign its user out because Tollgate
        // could not look.
        Err(err) => return Err(err),
    };
    let username = match state.profile(&auth).await {
        Ok(user) => Some(user.username),
        // The user behind a live session is gone: the token is worthless.
        Err(err) if err.code == ErrorCode::InvalidToken => return Ok(None),
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
