//! Integration tests: the real HTTP server on a random port, on a real
//! PostgreSQL with a schema per test. One binary, a module per resource.

#[macro_use]
mod helpers;

mod account;
mod admin;
mod binary;
mod business;
mod compat;
mod console;
mod contract;
mod cors;
mod dependencies;
mod deploy;
mod durability;
mod events;
mod hasher_storm;
mod headers;
mod health;
mod hostile_input;
mod kind_limits;
mod layering;
mod metrics;
mod queue_store;
mod rate_limits;
mod reload;
mod retries;
mod scale_out;
mod session_store;
mod sessions;
mod signin;
mod signing_keys;
mod signup;
mod slow_clients;
mod store_tls;
mod tasks;
mod telemetry;
mod tls;
mod tokens;
mod user_store;
