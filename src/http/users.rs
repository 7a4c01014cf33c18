//! `/api/v1/users/*`: the signed-in user's own profile and account.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::error::{ApiError, ErrorCode};
use super::extract::Authenticated;
use super::views::UserView;
use super::{AppState, schema};
use crate::accounts::AccountError;
use crate::domain::Password;

/// The caller's profile.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = UserView, description = "The profile")))]
pub async fn get_me(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<web::Json<UserView>, ApiError> {
    Ok(web::Json(state.profile(&auth).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct DeleteAccountBody {
    /// The account's password, asked again.
    #[schema(schema_with = schema::password)]
    password: String,
}

/// Deletes the caller's account: their waiting tasks are cancelled and
/// every session of theirs ends, this one included.
#[utoipa::path(delete, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    request_body = DeleteAccountBody,
    responses(
        (status = 204, description = "Deleted; sessions revoked, waiting tasks cancelled"),
        (status = 401, description = "`invalid_credentials`: the password is wrong"),
        (status = 429, description = "`rate_limited`: too many wrong passwords lately",
            headers(("retry-after" = u64, description = "Seconds until a try may succeed"))),
        (status = 503, description = "`queue_unavailable`: the waiting tasks could not be cancelled, so the account is kept; retry"),
    ))]
pub async fn delete_me(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: web::Json<DeleteAccountBody>,
) -> Result<HttpResponse, ApiError> {
    let password = Password::parse(&body.password, "password")?;
    match state
        .registry
        .delete_account(auth.session.user_id, auth.session.id, password)
        .await
    {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(AccountError::InvalidCredentials) => Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "the password is wrong",
        )),
        Err(err) => Err(err.into()),
    }
}
