//! One shard of the session table: an actor owning its sessions outright,
//! so no lock is shared between shards, and sweeping its own on a timer.

use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult, Supervised};

use crate::clock::Clock;
use crate::domain::{Session, SessionId, SessionTable, TouchOutcome, UserId};

pub struct SessionShard {
    table: SessionTable,
    clock: Clock,
    sweep_interval: Duration,
}

impl SessionShard {
    pub fn new(idle_ttl: Duration, sweep_interval: Duration, clock: Clock) -> Self {
        Self {
            table: SessionTable::new(idle_ttl),
            clock,
            sweep_interval,
        }
    }

    fn sweep(&mut self) {
        let swept = self.table.sweep(self.clock.now_millis());
        if swept > 0 {
            tracing::debug!(
                swept,
                remaining = self.table.len(),
                "swept expired sessions"
            );
        }
    }
}

impl Actor for SessionShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.sweep_interval, |shard, _| shard.sweep());
    }
}

/// A restart keeps the table: the `Supervisor` reuses this same value, and
/// `started` runs again to set the sweep timer up anew.
impl Supervised for SessionShard {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(
            actor = "SessionShard",
            sessions = self.table.len(),
            "restarting"
        );
    }
}

/// Start a session for a user; replies with it.
#[derive(Message)]
#[rtype(result = "Session")]
pub struct Open {
    pub id: SessionId,
    pub user_id: UserId,
    /// When it opened, in milliseconds since the epoch.
    pub now_ms: i64,
    /// Milliseconds since the epoch after which no use can extend it.
    pub absolute_ms: i64,
}

/// Use a session: reinflate it if it is live.
#[derive(Message)]
#[rtype(result = "TouchOutcome")]
pub struct Touch {
    pub id: SessionId,
    pub user_id: UserId,
}

/// End one session; replies whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Revoke(pub SessionId);

/// End a user's sessions, except one; replies how many ended.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RevokeUser {
    pub user_id: UserId,
    pub keep: Option<SessionId>,
}

/// How many sessions the shard holds (live or not yet swept).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count;

impl Handler<Open> for SessionShard {
    type Result = MessageResult<Open>;

    fn handle(&mut self, msg: Open, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.table
                .open(msg.id, msg.user_id, msg.now_ms, msg.absolute_ms),
        )
    }
}

impl Handler<Touch> for SessionShard {
    type Result = MessageResult<Touch>;

    fn handle(&mut self, msg: Touch, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.table
                .touch(msg.id, msg.user_id, self.clock.now_millis()),
        )
    }
}

impl Handler<Revoke> for SessionShard {
    type Result = bool;

    fn handle(&mut self, msg: Revoke, _: &mut Context<Self>) -> bool {
        self.table.revoke(msg.0)
    }
}

impl Handler<RevokeUser> for SessionShard {
    type Result = usize;

    fn handle(&mut self, msg: RevokeUser, _: &mut Context<Self>) -> usize {
        self.table.revoke_user(msg.user_id, msg.keep)
    }
}

impl Handler<Count> for SessionShard {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
        self.table.len()
    }
}
