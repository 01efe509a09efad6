//! The store's health as the HTTP port reports it, without asking the store on
//! every request.
//!
//! One background task ([`StoreHealth::run`]) asks the store for its status
//! ([`Store::status`]) once per interval, each call bounded by the interval,
//! and keeps the last answer. `/metrics` (the store gauges) and `/readyz` read
//! that answer, so a Prometheus scrape or a probe never queries ClickHouse: a
//! burst of scrapes, or a ClickHouse that hangs, costs one status query per
//! interval. `/healthz` (liveness) reads nothing at all: it answers while the
//! process serves HTTP, so a slow store never gets the server restarted.
//!
//! Ready means: the last check succeeded and is recent (younger than three
//! intervals; an older one means the checks themselves are stuck). For the
//! ClickHouse store a check fails until the schema is applied and whenever
//! ClickHouse does not answer (flows received meanwhile are spooled).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::ApiMetrics;
use crate::store::{Store, StoreStatus};

/// One status check of the store.
#[derive(Debug, Clone)]
pub struct StoreCheck {
    /// When the check finished.
    pub at: Instant,
    /// The store's status, or why it could not give it.
    pub outcome: Result<StoreStatus, String>,
}

/// Whether the server can serve queries from its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The last check succeeded, this long ago.
    Ready {
        /// Age of the last successful check.
        checked_ago: Duration,
    },
    /// Not ready, and why (names the store's error or the check's age).
    NotReady {
        /// A sentence for the probe's body and logs.
        reason: String,
    },
}

/// The last store check, shared by the checking task and the HTTP endpoint.
#[derive(Debug)]
pub struct StoreHealth {
    interval: Duration,
    last: Mutex<Option<StoreCheck>>,
}

impl StoreHealth {
    /// No check yet; checks run every `interval` once [`run`](Self::run) is spawned.
    pub fn new(interval: Duration) -> StoreHealth {
        StoreHealth {
            interval,
            last: Mutex::new(None),
        }
    }

    /// How often the store is checked.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> MutexGuard<'_, Option<StoreCheck>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last check, if any ran.
    pub fn last(&self) -> Option<StoreCheck> {
        self.lock().clone()
    }

    /// Records a check's outcome (what [`run`](Self::run) does after each
    /// check).
    pub fn record(&self, check: StoreCheck) {
        *self.lock() = Some(check);
    }

    /// Readiness at `now` from the last check alone (no store call).
    pub fn readiness(&self, now: Instant) -> Readiness {
        let Some(check) = self.last() else {
            return Readiness::NotReady {
                reason: "the store has not been checked yet".into(),
            };
        };
        let age = now.saturating_duration_since(check.at);
        match check.outcome {
            Err(e) => Readiness::NotReady {
                reason: format!("the store's last status check failed: {e}"),
            },
            Ok(_) if age > self.interval * 3 => Readiness::NotReady {
                reason: format!(
                    "the store's last successful status check is {:.0?} old (checks run every {:.0?})",
                    age, self.interval
                ),
            },
            Ok(_) => Readiness::Ready { checked_ago: age },
        }
    }

    /// Checks `store` now and every interval until `shutdown` turns true,
    /// recording each outcome here and in `metrics`' store gauges.
    pub async fn run<S: Store>(
        self: Arc<Self>,
        store: Arc<S>,
        metrics: Arc<ApiMetrics>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = crate::server::stopped(&mut shutdown) => return,
            }
            let outcome = match tokio::time::timeout(self.interval, store.status()).await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:.0?}", self.interval)),
            };
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "store status check failed");
            }
            metrics.record_status(outcome.as_ref().ok());
            self.record(StoreCheck {
                at: Instant::now(),
                outcome,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(at: Instant, ok: bool) -> StoreCheck {
        StoreCheck {
            at,
            outcome: if ok {
                Ok(StoreStatus::default())
            } else {
                Err("clickhouse: connection refused".into())
            },
        }
    }

    #[test]
    fn readiness_follows_the_last_check_and_its_age() {
        let health = StoreHealth::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(matches!(
            health.readiness(t0),
            Readiness::NotReady { reason } if reason.contains("not been checked")
        ));
        health.record(check(t0, true));
        assert_eq!(
            health.readiness(t0 + Duration::from_secs(5)),
            Readiness::Ready {
                checked_ago: Duration::from_secs(5)
            }
        );
        // Three intervals without a new check: the checks are stuck.
        assert!(matches!(
            health.readiness(t0 + Duration::from_secs(31)),
            Readiness::NotReady { reason } if reason.contains("31s old")
        ));
        health.record(check(t0 + Duration::from_secs(40), false));
        assert!(matches!(
            health.readiness(t0 + Duration::from_secs(41)),
            Readiness::NotReady { reason } if reason.contains("connection refused")
        ));
    }
}
