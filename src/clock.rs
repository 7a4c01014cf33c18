//! Wall-clock time behind a handle, so that tests can hold time still and
//! move it by hand instead of sleeping through a 30-second idle timeout.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Where "now" comes from. Cheap to clone; clones share one time source.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None` reads the system clock; `Some` holds milliseconds since the
    /// Unix epoch that only [`Clock::advance`] moves.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands at `start` until advanced.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(start.timestamp_millis()))),
        }
    }

    /// The current time, to the millisecond.
    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_millis()).unwrap_or_default()
    }

    /// The current time as milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> i64 {
        match &self.manual {
            Some(millis) => millis.load(Ordering::SeqCst),
            None => Utc::now().timestamp_millis(),
        }
    }

    /// Moves a manual clock forward.
    ///
    /// # Panics
    /// On the system clock, which nobody can move: calling this there is a
    /// bug in the caller, and a silent no-op would hide it.
    pub fn advance(&self, by: Duration) {
        let millis = self
            .manual
            .as_ref()
            .expect("only a manual clock can be advanced");
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        millis.fetch_add(by, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let clock = Clock::manual(start);
        let clone = clock.clone();
        assert_eq!(clock.now(), start);
        clone.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_millis(), start.timestamp_millis() + 1500);
    }

    #[test]
    fn system_clock_follows_real_time() {
        let before = Utc::now().timestamp_millis();
        let now = Clock::system().now_millis();
        assert!(now >= before && now - before < 5_000);
    }
}
