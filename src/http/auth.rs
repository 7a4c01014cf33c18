//! `/api/v1/auth/*`: sign-up, sign-in, sign-out, sessions, password change
//! and token introspection.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::openapi::{RefOr, Schema};
use uuid::Uuid;

use super::{AppState, Authenticated, extract::bearer_token, users::UserView};
use crate::actors::{ChangePassword, GetUser, Grant, Register, RegistryError, SignIn, SignUp};
use crate::domain::{Email, InvalidInput, Login, Password, Session, Username};
use crate::error::{ApiError, ErrorCode};
use crate::events::{Event, RevokeReason};

/// The shapes the OpenAPI document gives credentials; the parsers in
/// `domain` are what decide.
pub(super) mod shapes {
    use utoipa::openapi::{Object, ObjectBuilder, Type};

    /// Printable ASCII, one `@`, a domain of two or more non-empty labels.
    const EMAIL: &str = "[!-?A-~]+@[!-,\\-/-?A-~]+(\\.[!-,\\-/-?A-~]+)+";

    fn string(pattern: &str, description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .description(Some(description))
    }

    /// A member that may also be `null`, which counts as absent.
    pub fn nullable(mut schema: Object) -> Object {
        schema.schema_type = [Type::String, Type::Null].into_iter().collect();
        schema
    }

    pub fn optional_email() -> Object {
        nullable(email())
    }

    pub fn username() -> Object {
        string(
            "^[A-Za-z0-9_.-]{3,32}$",
            "3 to 32 characters of letters, digits, '_', '.' and '-'; unique without regard to case",
        )
        .examples(["ada"])
        .build()
    }

    /// The character count can only bound the byte count from above.
    pub fn password() -> Object {
        string("^[^\\u0000]{8,72}$", "8 to 72 bytes of UTF-8, no NUL")
            .examples(["correct horse battery"])
            .build()
    }

    pub fn email() -> Object {
        string(
            &format!("^{EMAIL}$"),
            "An e-mail address (printable ASCII), at most 254 bytes",
        )
        .max_length(Some(254))
        .examples(["ada@example.com"])
        .build()
    }

    /// What sign-in takes as `username`.
    pub fn login() -> Object {
        string(
            &format!("^([A-Za-z0-9_.-]{{3,32}}|{EMAIL})$"),
            "A username, or an e-mail address (recognised by its '@')",
        )
        .max_length(Some(254))
        .examples(["ada"])
        .build()
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignUpBody {
    #[schema(schema_with = shapes::username)]
    username: String,
    #[schema(schema_with = shapes::password)]
    password: String,
    #[serde(default)]
    #[schema(schema_with = shapes::optional_email, required = false)]
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
            .property("username", shapes::nullable(shapes::login()))
            .property("email", shapes::nullable(shapes::email()))
            .property("password", shapes::password())
            .required("password");
        let exactly_one = OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .property("username", shapes::login())
                    .required("username"),
            )
            .item(
                ObjectBuilder::new()
                    .property("email", shapes::email())
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
    #[schema(schema_with = shapes::password)]
    current_password: String,
    #[schema(schema_with = shapes::password)]
    new_password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct IntrospectBody {
    token: String,
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
    ))]
pub async fn sign_up(
    state: web::Data<AppState>,
    body: web::Json<SignUpBody>,
) -> Result<HttpResponse, ApiError> {
    let grant = state
        .registry
        .send(SignUp(registration(body.into_inner())?))
        .await??;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, "/api/v1/users/me"))
        .json(token_grant(&state, grant)?))
}

/// The registration a sign-up body describes, every field checked.
pub fn registration(body: SignUpBody) -> Result<Register, ApiError> {
    let username = Username::parse(&body.username);
    let password = Password::parse(&body.password, "password");
    let email = body.email.as_deref().map(Email::parse).transpose();
    let (username, password, email) = match (username, password, email) {
        (Ok(username), Ok(password), Ok(email)) => (username, password, email),
        (u, p, e) => return Err(ApiError::invalid_fields([u.err(), p.err(), e.err()])),
    };
    Ok(Register {
        username,
        email,
        password,
    })
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
    #[response(status = 429, description = "`rate_limited`: too many failed sign-ins from this address or for this login",
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

/// Ends the session the token belongs to.
#[utoipa::path(post, path = "/api/v1/auth/signout", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204, description = "The session is revoked")))]
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
    ))]
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
    request_body = IntrospectBody,
    responses(
        (status = 200, body = Introspection, description = "Whether the token is active, and whose"),
        (status = 401, description = "`missing_credentials`, `invalid_credentials`: no or a wrong service credential; `introspection_disabled`: none is configured"),
    ))]
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
        Err(err) if err.code == ErrorCode::InvalidToken => return Ok(None),
        // An outage or overload is not an answer about the token: a
        // resource server must not sign its user out because Tollgate
        // could not look.
        Err(err) => return Err(err),
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
