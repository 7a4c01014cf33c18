//! The actor system: one file per role, each with its messages beside it.
//! Actors never block their arbiter; bcrypt runs only on the hasher pool.

mod password_hasher;
mod session_manager;
mod session_shard;
mod user_registry;

pub use password_hasher::{HashPassword, PasswordHasher, VerifyPassword};
pub use session_manager::SessionManager;
pub use session_shard::SessionShard;
pub use user_registry::{
    ChangePassword, GetUser, Grant, PingStore, RegistryConfig, RegistryError, SignIn, SignUp,
    UserRegistry,
};
