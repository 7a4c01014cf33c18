//! 7. Sessions held by the session actors directly (no HTTP, no bcrypt):
//!    memory per idle session, and how validation latency holds up as the
//!    table grows.

use std::cell::Cell;
use std::time::Duration;

use futures_util::StreamExt;
use tollgate::actors::SessionManager;
use tollgate::clock::Clock;
use tollgate::config::Settings;
use tollgate::domain::{Origin, Profile, SessionId, TouchOutcome, UserId};
use tollgate::telemetry::Metrics;
use uuid::Uuid;

use crate::Plan;
use crate::figures::{Figure, Goal};
use crate::load;
use crate::service::resident_bytes;

/// Sessions in the small table validation is compared with.
const FEW: usize = 1_000;

pub async fn memory_and_validation(plan: Plan) -> Vec<Figure> {
    let (few, _) = hold(FEW).await;
    let few_latency = validation(&few, plan.window).await;
    drop(few);
    let (many, bytes_each) = hold(plan.sessions).await;
    let many_latency = validation(&many, plan.window).await;
    vec![
        Figure::new(
            "7",
            "resident memory per idle session",
            (bytes_each, "B"),
            ("no baseline", 0.0),
            Goal::ValueAtMost { target: 150.0 },
            format!("{} sessions", plan.sessions),
        ),
        Figure::new(
            "7",
            "validate (touch) p50 with many sessions",
            (many_latency.latency_ms(0.5) * 1000.0, "µs"),
            ("p50 with 1,000", few_latency.latency_ms(0.5) * 1000.0),
            Goal::RatioAtMost { target: 1.2 },
            format!(
                "{} sessions: {}; 1,000: {}",
                plan.sessions,
                many_latency.summary(),
                few_latency.summary()
            ),
        ),
    ]
}

/// Sessions opened by one user each, and the manager holding them.
struct Held {
    manager: SessionManager,
    sessions: Vec<(SessionId, UserId)>,
}

/// Opens `count` sessions; answers them and the resident memory each added.
async fn hold(count: usize) -> (Held, f64) {
    let mut settings = Settings::embedded_default().session;
    // Idle sessions, not lapsing ones: nothing is swept while measured.
    settings.idle_ttl_secs = 24 * 3600;
    settings.sweep_interval_secs = 24 * 3600;
    let manager = SessionManager::start(
        &settings,
        Duration::from_secs(48 * 3600),
        Clock::system(),
        Metrics::noop(),
        None,
    );
    // The list of ids is resident before the first reading, so that only
    // the actors' tables make the difference.
    let nil = (SessionId(Uuid::nil()), UserId(Uuid::nil()));
    let mut sessions = vec![nil; count];
    // One client opens them all, as a load generator would: sessions
    // from one origin share its record.
    let origin = Origin::new(
        Some("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/140.0"),
        Some("203.0.113.7".parse().expect("an address")),
    );
    let before = resident_bytes("self");
    {
        let opened = (0..count).map(|_| {
            let (manager, origin) = (&manager, &origin);
            let user = Profile {
                id: UserId::new(),
                username: "holder".into(),
                email: None,
                created_at: chrono::Utc::now(),
            };
            async move {
                manager
                    .open(&user, origin)
                    .await
                    .map(|(session, _)| session)
                    .expect("a session opens")
            }
        });
        let mut opened = futures_util::stream::iter(opened).buffer_unordered(512);
        let mut n = 0;
        while let Some(session) = opened.next().await {
            sessions[n] = (session.id, session.user_id);
            n += 1;
        }
    }
    let after = resident_bytes("self");
    let bytes_each = after.saturating_sub(before) as f64 / count as f64;
    (Held { manager, sessions }, bytes_each)
}

/// One touch after another on sessions spread over the table.
async fn validation(held: &Held, window: Duration) -> load::Load {
    let step = Cell::new(0usize);
    load::run(1, window, |_| {
        // A large odd stride visits the table in a scattered order.
        let n = step.get();
        step.set(n.wrapping_add(2_654_435_761));
        let (id, user) = held.sessions[n % held.sessions.len()];
        let manager = &held.manager;
        async move { matches!(manager.touch(id, user).await, Ok(TouchOutcome::Live(_))) }
    })
    .await
}
