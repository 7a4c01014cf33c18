//! The HTTP edge: the route table, a module per resource, the extractors
//! that authenticate a caller, middleware, and the error-code table. Only
//! this module knows HTTP. Handlers parse input into domain types, call a
//! handle (the user registry, the session manager, the queue) and map the
//! answer; they reach no store themselves.

mod admin;
mod auth;
mod compat;
mod error;
mod extract;
mod health;
mod middleware;
mod observe;
mod openapi;
mod reference;
mod routes;
mod schema;
mod state;
mod tasks;
mod users;
mod views;

pub use admin::{AdminState, ROUTES as ADMIN_ROUTES};
pub use error::{ApiError, ErrorCode};
pub use extract::Authenticated;
pub use middleware::{body_deadline, cors, method_not_allowed, security_headers};
pub use observe::{REQUEST_ID, observe};
pub use routes::{BodyLimits, ROUTES, configure};

/// The admin listener's routes.
pub use admin::configure as configure_admin;
pub use state::{AppState, TaskIntake};
