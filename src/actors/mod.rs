//! The actor system: one file per role, each with its messages beside it.
//! Actors never block their arbiter; bcrypt runs only on the hasher pool.

mod password_hasher;
mod queue;
mod queue_manager;
mod queue_router;
mod session_manager;
mod session_shard;
mod task_worker;
mod user_registry;
mod worker_pool;

pub use password_hasher::{HashPassword, HasherPool, PasswordHasher, VerifyPassword};
pub use queue::{Queue, QueueConfig};
pub use queue_manager::{CancelAll, CancelTask, Enqueue, QueueManager, TaskRequest};
pub use queue_router::{CountTasks, GetTask, ListTasks, PingQueue, QueueRouter};
pub use session_manager::{SessionError, SessionManager};
pub use session_shard::SessionShard;
pub use user_registry::{
    ChangePassword, DeleteAccount, GetUser, Grant, PingStore, Register, RegistryConfig,
    RegistryError, SignIn, SignUp, UserRegistry,
};
pub use worker_pool::{PoolStatus, WorkerPool};
