//! The route table, written once: it registers every route with actix and
//! lists every operation for the OpenAPI document, so the two cannot
//! drift apart.

use actix_web::{HttpResponse, web};

use super::error::{ApiError, ErrorCode, body_error, form_error};
use super::{auth, compat, health, openapi, tasks, users};

/// How large a request body may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Every route but the one below.
    pub default: usize,
    /// `POST /api/v1/tasks`: room for the largest payload and the rest.
    pub tasks: usize,
}

/// A route method as HTTP spells it: `get` → `GET`.
macro_rules! method_name {
    (get) => {
        "GET"
    };
    (post) => {
        "POST"
    };
    (delete) => {
        "DELETE"
    };
}

/// Writes `register` (each path one actix resource, so that a method it
/// does not serve gets 405 with `Allow`), `ROUTES` (every method and path)
/// and `Operations` (their OpenAPI paths). A path may name the field of
/// [`BodyLimits`] its bodies are held to.
macro_rules! routes {
    ($($path:literal $(, body $limit:ident)? => { $($method:ident $handler:path),+ $(,)? }),* $(,)?) => {
        // A table whose paths name no body limit has no use for `limits`.
        #[allow(unused_variables)]
        fn register(cfg: &mut web::ServiceConfig, limits: BodyLimits) {
            $(
                cfg.service(
                    web::resource($path)
                        $(.app_data(json(limits.$limit))
                          .app_data(web::PayloadConfig::new(limits.$limit)))?
                        $(.route(web::$method().to($handler)))+
                );
            )*
        }

        /// Every route: its method, upper case, and its path template.
        pub const ROUTES: &[(&str, &str)] = &[$($((method_name!($method), $path)),+),*];

        /// The operations of the OpenAPI document, one per route.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($($handler),+),*))]
        pub struct Operations;
    };
}

pub(super) use {method_name, routes};

routes! {
    "/api/v1/auth/signup" => { post auth::sign_up },
    "/api/v1/auth/signin" => { post auth::sign_in },
    "/api/v1/auth/signout" => { post auth::sign_out },
    "/api/v1/auth/signout-all" => { post auth::sign_out_all },
    "/api/v1/auth/password" => { post auth::change_password },
    "/api/v1/auth/session" => { get auth::current_session },
    "/api/v1/auth/sessions" => { get auth::list_sessions },
    "/api/v1/auth/sessions/{id}" => { delete auth::revoke_session },
    "/api/v1/auth/introspect" => { post auth::introspect },
    "/.well-known/jwks.json" => { get auth::jwks },
    "/api/v1/users/me" => { get users::get_me, delete users::delete_me },
    "/api/v1/tasks", body tasks => { post tasks::enqueue_task, get tasks::list_tasks },
    "/api/v1/tasks/{id}" => { get tasks::get_task, delete tasks::cancel_task },
    "/api/v1/queue" => { get tasks::get_queue },
    "/health/live" => { get health::live },
    "/health/ready" => { get health::ready },
    "/metrics" => { get health::metrics },
    "/openapi.json" => { get openapi::document },
    "/docs" => { get openapi::docs },
    "/register" => { post compat::register },
    "/login" => { post compat::login },
    "/enqueue" => { post compat::enqueue },
    "/protected-route" => { get compat::protected_route },
    "/data" => { get compat::data },
    "/validateToken" => { post compat::validate_token },
    "/profile" => { get compat::profile },
    "/auth/health" => { get compat::auth_health },
}

/// Registers every route, with JSON bodies limited as `limits` says and
/// every path that is no route answered 404 with a problem body.
pub fn configure(limits: BodyLimits) -> impl FnOnce(&mut web::ServiceConfig) {
    openapi::prepare(<Operations as utoipa::OpenApi>::openapi);
    move |cfg| {
        cfg.app_data(json(limits.default))
            .app_data(web::PayloadConfig::new(limits.default))
            .app_data(
                web::FormConfig::default()
                    .limit(limits.default)
                    .error_handler(form_error),
            )
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                ApiError::new(ErrorCode::InvalidInput, err.to_string()).into()
            }));
        register(cfg, limits);
        cfg.default_service(web::to(not_found));
    }
}

/// JSON bodies of at most `limit` bytes, their failures as problems.
pub(super) fn json(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(body_error)
}

pub(super) async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}
