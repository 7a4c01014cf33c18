//! Integration tests: the real HTTP server on a random port, on a real
//! PostgreSQL with a schema per test. One binary, a module per resource.

mod binary;
mod hasher_storm;
mod health;
mod helpers;
mod sessions;
mod signin;
mod signup;
mod tokens;
mod user_store;
