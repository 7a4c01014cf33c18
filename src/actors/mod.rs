//! The actor system: one module per role, each with its messages beside it,
//! and the handles (`SessionManager`, `Queue`, `HasherPool`) through which
//! the rest of the service reaches them. Actors never block their arbiter;
//! bcrypt runs only on the hasher pool.

mod password_hasher;
mod queue;
mod session_manager;
mod session_shard;

pub use password_hasher::{
    HashPassword, HasherError, HasherPool, PasswordHasher, Priority, VerifyPassword,
};
pub use queue::{PoolStatus, Queue, QueueError};
pub use session_manager::{SessionError, SessionManager};
pub use session_shard::SessionShard;
