//! Circuit breaker for one upstream replica, as a pure state machine.
//!
//! Time is passed in, never read, so every transition is tested without sleeping. The proxy
//! keeps one `Breaker` per replica behind a short lock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::stats::BreakerState;
use crate::table::BreakerConfig;

/// Ceiling for the doubling open period, unless the table asks for a longer first period.
const MAX_OPEN: Duration = Duration::from_millis(30_000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

/// What `admit` granted. The request must hand it back to `record` or `abandon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit {
    /// This request is the single half-open probe whose outcome decides the state.
    pub(crate) probe: bool,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: State,
    consecutive_failures: u32,
    /// Most recent outcomes, `true` = success; never longer than the configured window.
    window: VecDeque<bool>,
    window_successes: usize,
    /// Trips since the breaker last closed after a successful probe; drives the backoff.
    consecutive_trips: u32,
    trips: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            consecutive_failures: 0,
            window: VecDeque::new(),
            window_successes: 0,
            consecutive_trips: 0,
            trips: 0,
        }
    }
}

impl Breaker {
    /// Asks to send one request. `None` means the replica must be skipped.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<Permit> {
        match self.state {
            State::Closed => Some(Permit { probe: false }),
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probe_in_flight: true };
                Some(Permit { probe: true })
            }
            State::Open { .. } => None,
            State::HalfOpen { probe_in_flight: true } => None,
            State::HalfOpen { probe_in_flight: false } => {
                self.state = State::HalfOpen { probe_in_flight: true };
                Some(Permit { probe: true })
            }
        }
    }

    /// Reports the outcome of a request admitted with `permit`.
    pub(crate) fn record(&mut self, permit: Permit, success: bool, now: Instant, config: &BreakerConfig) {
        match self.state {
            State::Closed => {
                if success {
                    self.consecutive_failures = 0;
                } else {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                }
                self.push_outcome(success, config.window);
                if self.consecutive_failures >= config.consecutive_failures || self.window_is_bad(config) {
                    self.trip(now, config);
                }
            }
            // Only the probe decides; requests admitted before the trip report late and are
            // ignored, since they say nothing about the replica's health after the open period.
            State::HalfOpen { .. } if permit.probe => {
                if success {
                    self.close();
                } else {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    self.trip(now, config);
                }
            }
            State::HalfOpen { .. } | State::Open { .. } => {}
        }
    }

    /// The replica could not be reached (connection refused, no route, connect timeout): it
    /// is taken out at once instead of after the consecutive-failure threshold, since every
    /// request sent to it meanwhile would fail the same way. Probing follows as after a trip.
    pub(crate) fn eject(&mut self, permit: Permit, now: Instant, config: &BreakerConfig) {
        match self.state {
            State::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.trip(now, config);
            }
            State::HalfOpen { .. } if permit.probe => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.trip(now, config);
            }
            State::HalfOpen { .. } | State::Open { .. } => {}
        }
    }

    /// The request ended without an outcome (client went away): free the probe slot so the
    /// breaker cannot stay half-open forever.
    pub(crate) fn abandon(&mut self, permit: Permit) {
        if permit.probe && self.state == (State::HalfOpen { probe_in_flight: true }) {
            self.state = State::HalfOpen { probe_in_flight: false };
        }
    }

    /// The state as a reader would see it at `now`; an expired open period reads as half-open.
    pub(crate) fn state_at(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub(crate) fn trips(&self) -> u64 {
        self.trips
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    fn push_outcome(&mut self, success: bool, window: u32) {
        let window = window.max(1) as usize;
        while self.window.len() >= window {
            if self.window.pop_front() == Some(true) {
                self.window_successes -= 1;
            }
        }
        self.window.push_back(success);
        if success {
            self.window_successes += 1;
        }
    }

    fn window_is_bad(&self, config: &BreakerConfig) -> bool {
        let len = self.window.len();
        len >= config.window.max(1) as usize && (self.window_successes as f64) / (len as f64) < config.min_success_rate
    }

    fn trip(&mut self, now: Instant, config: &BreakerConfig) {
        let base = Duration::from_millis(config.open_for_ms);
        let cap = MAX_OPEN.max(base);
        let factor = 1u32.checked_shl(self.consecutive_trips.min(31)).unwrap_or(u32::MAX);
        let open_for = base.saturating_mul(factor).min(cap);
        self.state = State::Open { until: now + open_for };
        self.consecutive_trips = self.consecutive_trips.saturating_add(1);
        self.trips += 1;
        self.window.clear();
        self.window_successes = 0;
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.consecutive_failures = 0;
        self.consecutive_trips = 0;
        self.window.clear();
        self.window_successes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOSED: Permit = Permit { probe: false };

    fn config() -> BreakerConfig {
        BreakerConfig { consecutive_failures: 3, window: 10, min_success_rate: 0.5, open_for_ms: 1_000 }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fail(b: &mut Breaker, now: Instant, c: &BreakerConfig) {
        let p = b.admit(now).expect("admitted");
        b.record(p, false, now, c);
    }

    fn succeed(b: &mut Breaker, now: Instant, c: &BreakerConfig) {
        let p = b.admit(now).expect("admitted");
        b.record(p, true, now, c);
    }

    #[test]
    fn consecutive_failures_trip_then_probe_closes() {
        let (c, t0) = (config(), Instant::now());
        let mut b = Breaker::default();
        fail(&mut b, t0, &c);
        fail(&mut b, t0, &c);
        assert_eq!(b.state_at(t0), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 2);
        // A success in between resets the run.
        succeed(&mut b, t0, &c);
        fail(&mut b, t0, &c);
        fail(&mut b, t0, &c);
        assert_eq!(b.state_at(t0), BreakerState::Closed);
        fail(&mut b, t0, &c);
        assert_eq!(b.state_at(t0), BreakerState::Open);
        assert_eq!(b.trips(), 1);

        assert_eq!(b.admit(t0 + ms(999)), None);
        let probe = b.admit(t0 + ms(1_000)).unwrap();
        assert!(probe.probe);
        assert_eq!(b.state_at(t0 + ms(1_000)), BreakerState::HalfOpen);
        // Exactly one probe at a time.
        assert_eq!(b.admit(t0 + ms(1_001)), None);
        b.record(probe, true, t0 + ms(1_010), &c);
        assert_eq!(b.state_at(t0 + ms(1_010)), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.admit(t0 + ms(1_010)), Some(CLOSED));
    }

    #[test]
    fn failed_probes_double_the_open_period_up_to_the_cap() {
        let c = BreakerConfig { open_for_ms: 2_000, ..config() };
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            fail(&mut b, t0, &c);
        }
        let mut now = t0;
        for expected in [2_000, 4_000, 8_000, 16_000, 30_000, 30_000] {
            assert_eq!(b.admit(now + ms(expected - 1)), None, "still open before {expected} ms");
            now += ms(expected);
            let probe = b.admit(now).unwrap();
            assert!(probe.probe);
            b.record(probe, false, now, &c);
            assert_eq!(b.state_at(now), BreakerState::Open);
        }
        assert_eq!(b.trips(), 7);

        // Recovery resets the backoff: the next trip is open for the base period again.
        now += ms(30_000);
        let probe = b.admit(now).unwrap();
        b.record(probe, true, now, &c);
        for _ in 0..3 {
            fail(&mut b, now, &c);
        }
        assert_eq!(b.admit(now + ms(1_999)), None);
        assert!(b.admit(now + ms(2_000)).is_some());
    }

    #[test]
    fn low_success_rate_over_a_full_window_trips() {
        let c = BreakerConfig { consecutive_failures: 100, ..config() };
        let t0 = Instant::now();
        let mut b = Breaker::default();
        // Alternate fail, fail, success: 33% success, never 3 failures in a row with a higher
        // threshold; the window is not full until 10 outcomes.
        let pattern = [false, false, true];
        for i in 0..9 {
            let p = b.admit(t0).unwrap();
            b.record(p, pattern[i % 3], t0, &c);
            assert_eq!(b.state_at(t0), BreakerState::Closed, "window not full after {}", i + 1);
        }
        let p = b.admit(t0).unwrap();
        b.record(p, false, t0, &c);
        assert_eq!(b.state_at(t0), BreakerState::Open);
        assert_eq!(b.trips(), 1);
    }

    #[test]
    fn healthy_enough_window_stays_closed() {
        let c = BreakerConfig { consecutive_failures: 100, ..config() };
        let t0 = Instant::now();
        let mut b = Breaker::default();
        // 50% success is not below 0.5; the window slides without tripping.
        for i in 0..1_000 {
            let p = b.admit(t0).unwrap();
            b.record(p, i % 2 == 0, t0, &c);
        }
        assert_eq!(b.state_at(t0), BreakerState::Closed);
        assert_eq!(b.trips(), 0);
    }

    #[test]
    fn late_outcomes_do_not_decide_while_open_or_half_open() {
        let (c, t0) = (config(), Instant::now());
        let mut b = Breaker::default();
        let stragglers: Vec<Permit> = (0..3).map(|_| b.admit(t0).unwrap()).collect();
        for _ in 0..3 {
            fail(&mut b, t0, &c);
        }
        // Requests admitted before the trip finish while open: ignored.
        b.record(stragglers[0], true, t0, &c);
        assert_eq!(b.state_at(t0), BreakerState::Open);
        let now = t0 + ms(1_000);
        let probe = b.admit(now).unwrap();
        // ... and while half-open: only the probe counts.
        b.record(stragglers[1], true, now, &c);
        b.record(stragglers[2], false, now, &c);
        assert_eq!(b.state_at(now), BreakerState::HalfOpen);
        assert_eq!(b.trips(), 1);
        b.record(probe, true, now, &c);
        assert_eq!(b.state_at(now), BreakerState::Closed);
    }

    #[test]
    fn an_unreachable_replica_is_ejected_at_once_and_probed_later() {
        let (c, t0) = (config(), Instant::now());
        let mut b = Breaker::default();
        let p = b.admit(t0).unwrap();
        b.eject(p, t0, &c);
        assert_eq!(b.state_at(t0), BreakerState::Open);
        assert_eq!(b.trips(), 1);
        // Requests admitted before the ejection report late and change nothing.
        b.eject(CLOSED, t0, &c);
        assert_eq!(b.trips(), 1);
        // After the open period the probe decides; an unreachable probe ejects again, longer.
        let probe = b.admit(t0 + ms(1_000)).unwrap();
        assert!(probe.probe);
        b.eject(probe, t0 + ms(1_000), &c);
        assert_eq!(b.state_at(t0 + ms(2_999)), BreakerState::Open);
        let probe = b.admit(t0 + ms(3_000)).unwrap();
        b.record(probe, true, t0 + ms(3_000), &c);
        assert_eq!(b.state_at(t0 + ms(3_000)), BreakerState::Closed);
    }

    #[test]
    fn abandoned_probe_frees_the_slot() {
        let (c, t0) = (config(), Instant::now());
        let mut b = Breaker::default();
        for _ in 0..3 {
            fail(&mut b, t0, &c);
        }
        let now = t0 + ms(1_000);
        let probe = b.admit(now).unwrap();
        assert_eq!(b.admit(now), None);
        b.abandon(probe);
        let again = b.admit(now).unwrap();
        assert!(again.probe);
        // Abandoning a non-probe permit changes nothing.
        b.abandon(CLOSED);
        assert_eq!(b.admit(now), None);
    }
}
