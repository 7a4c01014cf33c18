//! Tollgate: authentication with reinflating sessions, as a supervised
//! actor system. See the README's "Architecture" section for the map.

pub mod accounts;
pub mod actors;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod shutdown;
pub mod storage;
pub mod tasks;
pub mod telemetry;
