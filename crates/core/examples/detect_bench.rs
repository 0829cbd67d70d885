//! Detection benchmark: false alarms on healthy releases and time to detect regressions, for
//! ringfence's sequential analysis and the judging styles of Flagger, Kayenta and ringfence's
//! own fixed thresholds, all on the same simulated traffic.
//!
//! Run: `cargo run --release -p ringfence-core --example detect_bench` (add `-- --quick` for a
//! smaller run). Output is deterministic (seeded PRNG); results live in bench/results/detect.txt.
//!
//! Traffic: 200 req/s, Poisson arrivals per 100 ms tick, 5,000 users each sticky to a bucket
//! of 10,000 (like the router), the new version on the users whose bucket is below its weight.
//! The stable version fails 0.5% of requests and answers in log-normal time (median 20 ms,
//! sigma 0.5, p99 64 ms). Every analyzer is asked every 100 ms (the controller's cadence)
//! with the counters since the phase's bake started; Flagger-style and Kayenta-style checks
//! run on their own schedules over the same counters.

use std::fmt::Write as _;
use std::time::Instant;

use ringfence_core::analysis::latency::router_grid;
use ringfence_core::analysis::planner::{self, PhasePlan, Regression};
use ringfence_core::analysis::{PhaseContext, SequentialAnalyzer, SequentialConfig};
use ringfence_core::duration::Dur;
use ringfence_core::health::{
    Health, HealthAnalyzer, Mode, Observation, PhaseWindow, ThresholdAnalyzer, Traffic, VersionObservation,
};
use ringfence_core::spec::HealthSpec;

const RPS: f64 = 200.0;
const TICK_S: f64 = 0.1;
const PHASE_S: f64 = 60.0;
/// How long the sequential analysis may extend an inconclusive phase before it holds.
const MAX_EXTENSION_S: f64 = 120.0;
const USERS: usize = 5000;
const PLAN: [u32; 4] = [1000, 2500, 5000, 10_000];
const BASE_ERRORS: f64 = 0.005;
const MEDIAN_US: f64 = 20_000.0;
const SIGMA: f64 = 0.5;
const KAYENTA_EVERY_S: f64 = 15.0;
const FLAGGER_EVERY_S: f64 = 60.0;

// ---------------------------------------------------------------- PRNG (xoshiro256++)

struct Rng([u64; 4], Option<f64>);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()], None)
    }

    fn u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    fn f64(&mut self) -> f64 {
        (self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn normal(&mut self) -> f64 {
        if let Some(z) = self.1.take() {
            return z;
        }
        loop {
            let u = 2.0 * self.f64() - 1.0;
            let v = 2.0 * self.f64() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.1 = Some(v * f);
                return u * f;
            }
        }
    }

    fn poisson(&mut self, mean: f64) -> u32 {
        // Knuth; the means here are small (20 per tick).
        let l = (-mean).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.f64();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

fn seed(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5eed_u64, |h, &p| (h ^ p).wrapping_mul(0x100_0000_01b3).rotate_left(29))
}

// ---------------------------------------------------------------- scenarios

#[derive(Clone, Copy, PartialEq)]
enum Case {
    AA,
    /// Near A/A: every latency 2% longer, well inside the margin; must pass.
    Slower2,
    /// Near A/A: every latency 5% longer, inside the margin; must pass.
    Slower5,
    Hard,
    Subtle,
    TailP99,
    Variance,
    SomeUsers,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::AA => "A/A",
            Case::Slower2 => "near A/A: latency +2%",
            Case::Slower5 => "near A/A: latency +5%",
            Case::Hard => "(a) 20% errors",
            Case::Subtle => "(b) errors 0.5% -> 2%",
            Case::TailP99 => "(c) p99 +50% (same median)",
            Case::Variance => "(d) variance x2.7 (same mean)",
            Case::SomeUsers => "(e) 10% of users fail",
        }
    }

    /// (error rate, log-mean, log-sd) of the new version.
    fn canary(self) -> (f64, f64, f64) {
        let mu = MEDIAN_US.ln();
        match self {
            Case::AA | Case::SomeUsers => (BASE_ERRORS, mu, SIGMA),
            Case::Slower2 => (BASE_ERRORS, mu + 1.02f64.ln(), SIGMA),
            Case::Slower5 => (BASE_ERRORS, mu + 1.05f64.ln(), SIGMA),
            Case::Hard => (0.20, mu, SIGMA),
            Case::Subtle => (0.02, mu, SIGMA),
            // p99 = exp(mu + 2.326 sigma): +50% with the same median.
            Case::TailP99 => (BASE_ERRORS, mu, SIGMA + 1.5f64.ln() / 2.326_347_874),
            // sigma 0.75 with the mean exp(mu + sigma^2 / 2) kept: variance x2.66.
            Case::Variance => (BASE_ERRORS, mu + (SIGMA * SIGMA - 0.75 * 0.75) / 2.0, 0.75),
        }
    }
}

/// Cumulative counters of one version, router style.
#[derive(Clone)]
struct Counters {
    requests: u64,
    errors: u64,
    buckets: Vec<u64>,
}

impl Counters {
    fn new() -> Counters {
        Counters { requests: 0, errors: 0, buckets: vec![0; router_grid().len()] }
    }

    fn write(&self, t: &mut Traffic) {
        t.requests = self.requests;
        t.errors = self.errors;
        t.latency_us.clear();
        let grid = router_grid();
        t.latency_us.extend(self.buckets.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (grid[i], *c)));
    }
}

fn bucket_of(latency_us: f64) -> usize {
    let grid = router_grid();
    let x = latency_us.ceil().max(0.0) as u64;
    grid.partition_point(|&b| b < x).min(grid.len() - 1)
}

/// One phase's traffic: the users, their split, and what each version does.
struct Stream {
    rng: Rng,
    weight_bp: u32,
    user_bucket: Vec<u32>,
    user_fails: Vec<bool>,
    case: Case,
    canary: Counters,
    stable: Counters,
}

impl Stream {
    fn new(case: Case, weight_bp: u32, seed: u64) -> Stream {
        let mut rng = Rng::new(seed);
        let user_bucket = (0..USERS).map(|_| (rng.u64() % 10_000) as u32).collect();
        let user_fails = (0..USERS).map(|_| rng.f64() < 0.1).collect();
        Stream { rng, weight_bp, user_bucket, user_fails, case, canary: Counters::new(), stable: Counters::new() }
    }

    fn tick(&mut self) {
        let n = self.rng.poisson(RPS * TICK_S);
        let (c_err, c_mu, c_sigma) = self.case.canary();
        let mu = MEDIAN_US.ln();
        for _ in 0..n {
            let user = (self.rng.u64() % USERS as u64) as usize;
            let on_canary = self.user_bucket[user] < self.weight_bp;
            let (err, m, s, counters) = if on_canary {
                (c_err, c_mu, c_sigma, &mut self.canary)
            } else {
                (BASE_ERRORS, mu, SIGMA, &mut self.stable)
            };
            let failed = if on_canary && self.case == Case::SomeUsers && self.user_fails[user] {
                true
            } else {
                self.rng.f64() < err
            };
            let latency = (m + s * self.rng.normal()).exp();
            counters.requests += 1;
            counters.errors += failed as u64;
            counters.buckets[bucket_of(latency)] += 1;
        }
    }
}

// ---------------------------------------------------------------- the other judges

/// Flagger-style: the new version alone over the last interval; error rate above 1% or p99
/// above 500 ms fails; one failed check rolls back (threshold 1).
fn flagger_fails(now: &Counters, before: &Counters) -> bool {
    let requests = now.requests - before.requests;
    let errors = now.errors - before.errors;
    if requests == 0 {
        return false;
    }
    let mut t = Traffic { requests, errors, latency_us: Vec::new() };
    let grid = router_grid();
    t.latency_us = now
        .buckets
        .iter()
        .zip(&before.buckets)
        .enumerate()
        .filter(|(_, (a, b))| *a > *b)
        .map(|(i, (a, b))| (grid[i], a - b))
        .collect();
    errors as f64 / requests as f64 > 0.01 || t.quantile_us(0.99).is_some_and(|p| p > 500_000)
}

/// Mann-Whitney U of "new above stable" on binned data (mid-ranks for ties), as a z score.
fn mann_whitney_z(new: &[u64], stable: &[u64]) -> f64 {
    let n1: f64 = new.iter().sum::<u64>() as f64;
    let n2: f64 = stable.iter().sum::<u64>() as f64;
    if n1 == 0.0 || n2 == 0.0 {
        return 0.0;
    }
    let (mut u, mut below, mut ties) = (0.0, 0.0, 0.0);
    for (&c, &b) in new.iter().zip(stable) {
        let (c, b) = (c as f64, b as f64);
        u += c * (below + 0.5 * b);
        below += b;
        let t = c + b;
        ties += t * t * t - t;
    }
    let n = n1 + n2;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 { 0.0 } else { (u - n1 * n2 / 2.0) / var.sqrt() }
}

/// Kayenta-style: Mann-Whitney U at 98% confidence on each metric (error indicator and
/// latency, per request), "increase" direction, over the whole window at each interval,
/// repeated without correction; any failing metric fails the canary.
fn kayenta_fails(c: &Counters, s: &Counters) -> bool {
    const Z: f64 = 2.326_347_874; // one side of a 98% two-sided interval
    let errs = mann_whitney_z(&[c.requests - c.errors, c.errors], &[s.requests - s.errors, s.errors]);
    let lat = mann_whitney_z(&c.buckets, &s.buckets);
    errs > Z || lat > Z
}

// ---------------------------------------------------------------- runs

struct Judges {
    seq: Vec<(String, SequentialConfig)>,
    spec: HealthSpec,
}

fn observation() -> Observation {
    Observation {
        canary: VersionObservation {
            version: "v2".into(),
            traffic: Some(Traffic::default()),
            probes_answered: 1,
            ..Default::default()
        },
        baseline: Some(VersionObservation {
            version: "v1".into(),
            traffic: Some(Traffic::default()),
            probes_answered: 1,
            ..Default::default()
        }),
        window_ms: 0,
        freshness_ms: 100,
        signals: Vec::new(),
    }
}

fn fill(obs: &mut Observation, st: &Stream, ticks: u32) {
    obs.window_ms = (ticks as f64 * TICK_S * 1000.0) as u64;
    if let Some(t) = obs.canary.traffic.as_mut() {
        st.canary.write(t);
    }
    if let Some(t) = obs.baseline.as_mut().and_then(|b| b.traffic.as_mut()) {
        st.stable.write(t);
    }
}

/// What happened to one analyzer in one phase.
#[derive(Clone, Copy, Default)]
struct Outcome {
    /// Seconds into the phase of the first unhealthy verdict.
    failed_at: Option<f64>,
    /// Sequential only: healthy at the end of the bake (else extended).
    passed_on_time: bool,
    /// Sequential only: seconds of extension until healthy; `None` if it held at the bound.
    extension_s: Option<f64>,
    /// Sequential only: the signal that failed.
    by: Option<&'static str>,
    /// The analyzer judged this phase (it had not failed or held in an earlier one).
    ran: bool,
}

/// One phase of one run: what happened to each analyzer, and for each sequential analyzer the
/// traffic it passed the phase on (what the next phase carries).
struct PhaseRun {
    outcomes: Vec<Outcome>,
    windows: Vec<Option<PhaseWindow>>,
}

/// Phase `phase` of `plan`, for the analyzers: the sequential configs (each carrying its own
/// earlier phases; `None` when it failed or held in one), then threshold, flagger, kayenta.
fn run_phase(
    j: &Judges,
    case: Case,
    plan: &[u32],
    phase: usize,
    seed: u64,
    extend: bool,
    carried: &[Option<Vec<PhaseWindow>>],
) -> PhaseRun {
    let weight = plan[phase];
    let mut st = Stream::new(case, weight, seed);
    let ctx = PhaseContext::of_plan(plan, phase);
    let seqs: Vec<SequentialAnalyzer> = j
        .seq
        .iter()
        .zip(carried)
        .map(|((_, c), earlier)| {
            SequentialAnalyzer::new(c.clone()).in_phase(ctx).after(plan, earlier.as_deref().unwrap_or_default())
        })
        .collect();
    let n = seqs.len();
    let mut out = vec![Outcome { ran: true, ..Outcome::default() }; n + 3];
    for i in 0..n {
        out[i].ran = carried[i].is_some();
    }
    let mut windows = vec![None; n];
    let mut done: Vec<bool> = carried.iter().map(Option::is_none).collect();
    let mut obs = observation();
    let phase_ticks = (PHASE_S / TICK_S).round() as u32;
    let kayenta_every = (KAYENTA_EVERY_S / TICK_S).round() as u32;
    let flagger_every = (FLAGGER_EVERY_S / TICK_S).round() as u32;
    let mut flagger_mark = st.canary.clone();
    let max_ticks = phase_ticks + if extend { (MAX_EXTENSION_S / TICK_S).round() as u32 } else { 0 };
    for tick in 1..=max_ticks {
        st.tick();
        let now = tick as f64 * TICK_S;
        let in_bake = tick <= phase_ticks;
        let thr_live = in_bake && out[n].failed_at.is_none();
        if done.iter().all(|&d| d) && !thr_live && !in_bake {
            break;
        }
        fill(&mut obs, &st, tick);
        for i in 0..n {
            if done[i] {
                continue;
            }
            let v = seqs[i].evaluate(&obs, &j.spec, Mode::Phase);
            match v.health {
                Health::Unhealthy => {
                    out[i].failed_at = Some(now);
                    done[i] = true;
                    out[i].by = v.deciding().next().map(|s| match s.signal.as_str() {
                        "error_rate" => "error_rate",
                        "latency" => "latency",
                        "error_rate_limit" => "error_rate_limit",
                        "latency_p99_limit" => "latency_p99_limit",
                        _ => "other",
                    });
                }
                Health::Healthy if tick >= phase_ticks => {
                    // The phase passes: on time, or after extending its bake.
                    out[i].passed_on_time = tick == phase_ticks;
                    out[i].extension_s = Some(now - PHASE_S);
                    done[i] = true;
                    if weight < 10_000 {
                        let mut o = observation();
                        fill(&mut o, &st, tick);
                        windows[i] = Some(PhaseWindow {
                            phase,
                            weight_bp: weight,
                            canary: o.canary.traffic.unwrap_or_default(),
                            stable: o.baseline.and_then(|b| b.traffic).unwrap_or_default(),
                        });
                    }
                }
                _ => {}
            }
        }
        if thr_live && ThresholdAnalyzer.evaluate(&obs, &j.spec, Mode::Phase).health == Health::Unhealthy {
            out[n].failed_at = Some(now);
        }
        if in_bake && tick % flagger_every == 0 && out[n + 1].failed_at.is_none() {
            if flagger_fails(&st.canary, &flagger_mark) {
                out[n + 1].failed_at = Some(now);
            }
            flagger_mark = st.canary.clone();
        }
        if in_bake
            && weight < 10_000
            && tick % kayenta_every == 0
            && out[n + 2].failed_at.is_none()
            && kayenta_fails(&st.canary, &st.stable)
        {
            out[n + 2].failed_at = Some(now);
        }
    }
    PhaseRun { outcomes: out, windows }
}

/// A whole rollout of `plan`: phase after phase, each sequential analyzer carrying the phases
/// it passed and stopping at its first failure or hold. `case_of(phase)` says what the new
/// version does in each phase.
fn run_rollout(j: &Judges, plan: &[u32], case_of: impl Fn(usize) -> Case, run_seed: &[u64]) -> Vec<PhaseRun> {
    let n = j.seq.len();
    let mut carried: Vec<Option<Vec<PhaseWindow>>> = vec![Some(Vec::new()); n];
    let mut phases = Vec::new();
    for phase in 0..plan.len() {
        let seed = seed(&[run_seed, &[phase as u64]].concat());
        let run = run_phase(j, case_of(phase), plan, phase, seed, true, &carried);
        for (i, slot) in carried.iter_mut().enumerate() {
            let o = &run.outcomes[i];
            match (&run.windows[i], slot.as_mut()) {
                (Some(w), Some(earlier)) if o.failed_at.is_none() => earlier.push(w.clone()),
                (None, Some(_)) if o.failed_at.is_none() && o.extension_s.is_some() => {} // passed at 100%
                _ => *slot = None,
            }
        }
        phases.push(run);
    }
    phases
}

fn parallel<T: Send>(count: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    std::thread::scope(|s| {
        let chunks: Vec<_> = results.chunks_mut(count.div_ceil(threads).max(1)).enumerate().collect();
        for (ci, chunk) in chunks {
            let f = &f;
            let size = count.div_ceil(threads).max(1);
            s.spawn(move || {
                for (k, slot) in chunk.iter_mut().enumerate() {
                    *slot = Some(f(ci * size + k));
                }
            });
        }
    });
    results.into_iter().map(|r| r.expect("every run done")).collect()
}

fn median(mut xs: Vec<f64>, n: usize) -> Option<f64> {
    // Median over all n runs, undetected ones counting as infinitely late.
    xs.sort_by(f64::total_cmp);
    let k = n.div_ceil(2);
    (xs.len() >= k && k > 0).then(|| xs[k - 1])
}

/// Upper end of the exact (Clopper-Pearson) 95% interval for a binomial proportion, by
/// bisection on the binomial tail.
fn upper95(k: usize, n: usize) -> f64 {
    let tail = |p: f64| {
        // P(X <= k) for X ~ Bin(n, p)
        let mut term = (1.0 - p).powi(n as i32);
        let mut sum = term;
        for i in 0..k {
            term *= (n - i) as f64 / (i + 1) as f64 * p / (1.0 - p);
            sum += term;
        }
        sum
    };
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if tail(mid) > 0.025 { lo = mid } else { hi = mid }
    }
    hi
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (aa_runs, near_runs, reg_runs) = if quick { (200, 100, 60) } else { (2000, 500, 600) };
    let started = Instant::now();
    let spec = HealthSpec {
        max_error_rate: 0.05,
        max_p99_latency: Some(Dur::ms(500)),
        min_requests: 20,
        ..Default::default()
    };
    let default = SequentialConfig::default();
    // The analysis before margins, with its defaults: any difference from the stable version
    // was acted on, at alpha 0.005 (90% of it to errors), latency thresholds from 100 µs to
    // 60 s. Its rows are the "before" of this release's changes.
    let before = SequentialConfig {
        alpha: 0.005,
        latency_fraction: 0.1,
        error_margin_ratio: 1.0,
        error_margin_abs: 0.0,
        latency_margin_ratio: 1.0,
        latency_margin_us: 0,
        latency_judged_us: (0, u64::MAX),
        error_alternatives: [(2.0, 0.1), (4.0, 0.35), (8.0, 0.1), (60.0, 0.45)]
            .map(|(odds_ratio, weight)| ringfence_core::analysis::eprocess::Component { odds_ratio, weight })
            .to_vec(),
        ..SequentialConfig::default()
    };
    let judges = Judges {
        seq: vec![
            ("ringfence sequential (default)".into(), default.clone()),
            ("ringfence before (no margin, a=0.005)".into(), before),
        ],
        spec,
    };
    let names: Vec<String> = judges
        .seq
        .iter()
        .map(|(n, _)| n.clone())
        .chain([
            "ringfence threshold (5%, 500 ms)".into(),
            "Flagger-style (1%, 500 ms, 60 s)".into(),
            "Kayenta-style MWU 98% / 15 s".into(),
        ])
        .collect();
    let n_seq = judges.seq.len();
    let mut out = String::new();
    let _ = writeln!(out, "ringfence detection benchmark");
    let _ = writeln!(
        out,
        "command: cargo run --release -p ringfence-core --example detect_bench{}",
        if quick { " -- --quick" } else { "" }
    );
    let _ = writeln!(
        out,
        "traffic: {RPS} req/s, Poisson per {TICK_S} s tick, {USERS} sticky users; stable: {}% errors, log-normal latency median 20 ms sigma 0.5 (p99 64 ms)",
        BASE_ERRORS * 100.0
    );
    let _ = writeln!(
        out,
        "plan: 10% / 25% / 50% / 100%, bake 60 s each; every analyzer asked every 100 ms on the counters since the bake began"
    );
    let _ = writeln!(
        out,
        "sequential: one e-process per test over the whole rollout, evidence carried from phase to phase; fails only beyond the margin (errors x{} and +{} points, latency x{} and +{} ms), alpha {} bounding false rollbacks of a release at the margin (Ville); passes once the target regression is ruled out (errors x{} and +{} points, latency x{} at the median, p90, p99; level {:.2}); 'before' is the analysis without margins at alpha 0.005; a phase not yet passed extends up to {MAX_EXTENSION_S} s, then holds",
        default.error_margin_ratio,
        default.error_margin_abs * 100.0,
        default.latency_margin_ratio,
        default.latency_margin_us as f64 / 1000.0,
        default.alpha,
        default.target_error_ratio,
        default.target_error_abs * 100.0,
        default.target_latency_ratio,
        1.0 - default.power
    );
    let _ = writeln!(
        out,
        "threshold: ringfence's ThresholdAnalyzer, error rate > 5% or p99 > 500 ms with >= 20 requests, every 100 ms"
    );
    let _ = writeln!(
        out,
        "flagger-style: new version alone, last 60 s, error rate > 1% or p99 > 500 ms, checked every 60 s, threshold 1"
    );
    let _ = writeln!(
        out,
        "kayenta-style: Mann-Whitney U per request (errors, latency), 98% confidence, cumulative window, every 15 s, no correction"
    );
    let _ = writeln!(out);

    // The planner on this traffic.
    let stable_hist = {
        let mut st = Stream::new(Case::AA, 0, 7);
        for _ in 0..600 {
            st.tick();
        }
        let mut t = Traffic::default();
        st.stable.write(&mut t);
        t.latency_us
    };
    let plan: Vec<PhasePlan> = PLAN.iter().map(|&w| PhasePlan { weight_bp: w, bake_s: PHASE_S }).collect();
    let _ = writeln!(
        out,
        "planner (defaults), time to detect at 200 req/s (Brownian approximation), and time for a release as good as the stable one to pass:"
    );
    for (i, &w) in PLAN.iter().enumerate().take(2) {
        let ctx = PhaseContext::of_plan(&PLAN, i);
        let live = planner::LiveTraffic::split(RPS, w, BASE_ERRORS, &stable_hist);
        for (label, r) in [
            ("20% errors", Regression::ErrorRate(0.2)),
            ("errors 0.5% -> 2%", Regression::ErrorRate(0.02)),
            ("latency x1.5", Regression::LatencyScale(1.5)),
        ] {
            if let Some(e) = planner::time_to_detect(&default, Some(&ctx), &live, r) {
                let _ = writeln!(
                    out,
                    "  phase {} ({}%{}): {label:<18} mean {:>5.1} s, 80% by {:>5.1} s",
                    i + 1,
                    w / 100,
                    if i > 0 { ", a regression first appearing in it" } else { "" },
                    e.expected_s,
                    e.powered_s
                );
            }
        }
    }
    for (i, &w) in PLAN.iter().enumerate().take(3) {
        let live = planner::LiveTraffic::split(RPS, w, BASE_ERRORS, &stable_hist);
        if let Some(t) = planner::time_to_pass(&default, &live) {
            let _ = writeln!(
                out,
                "  phase {} ({}%): an identical release passes by {t:.0} s ({:.0}% of the time)",
                i + 1,
                w / 100,
                planner::PASS_PLAN_PROBABILITY * 100.0
            );
        }
    }
    for a in planner::check_bakes(&default, &plan, RPS, BASE_ERRORS, &stable_hist, &[Regression::ErrorRate(0.02)]) {
        if let Some(w) = a.warning {
            let _ = writeln!(out, "  warning: {w}");
        }
    }
    let _ = writeln!(out);
    print!("{out}");
    let mut printed = out.len();

    // A/A: whole rollouts, each sequential analyzer carrying its evidence from phase to phase.
    let aa: Vec<Vec<PhaseRun>> = parallel(aa_runs, |r| run_rollout(&judges, &PLAN, |_| Case::AA, &[1, r as u64]));
    let _ = writeln!(out, "A/A: {aa_runs} rollouts of identical versions (4 phases each, evidence carried)");
    let _ = writeln!(out, "  {:<36} {:>16} {:>8} {:>10}   notes", "analyzer", "false rollbacks", "rate", "95% upper");
    let mut bars: Vec<(String, bool)> = Vec::new();
    for (a, name) in names.iter().enumerate() {
        let false_alarms = aa.iter().filter(|phases| phases.iter().any(|p| p.outcomes[a].failed_at.is_some())).count();
        if a == 0 {
            let rate = false_alarms as f64 / aa_runs as f64;
            bars.push((format!("A/A false rollbacks < 1 in 200 rollouts: {:.2}%", rate * 100.0), rate < 0.005));
            let held = aa
                .iter()
                .filter(|ph| {
                    ph.iter().any(|p| {
                        p.outcomes[a].ran && p.outcomes[a].failed_at.is_none() && p.outcomes[a].extension_s.is_none()
                    })
                })
                .count();
            let passed = aa_runs - false_alarms - held;
            bars.push((
                format!(
                    "A/A passes every phase on its own in >= 96% of rollouts: {:.1}%",
                    passed as f64 * 100.0 / aa_runs as f64
                ),
                passed as f64 >= 0.96 * aa_runs as f64,
            ));
        }
        let note = if a < n_seq {
            let phases: Vec<&Outcome> = aa
                .iter()
                .flat_map(|ph| ph.iter().take(PLAN.len() - 1).map(move |p| &p.outcomes[a]))
                .filter(|o| o.ran)
                .collect();
            let compared = phases.len().max(1);
            let late = phases.iter().filter(|o| o.failed_at.is_none() && !o.passed_on_time).count();
            let held =
                phases.iter().filter(|o| o.failed_at.is_none() && !o.passed_on_time && o.extension_s.is_none()).count();
            let ext: Vec<f64> = phases.iter().filter_map(|o| o.extension_s).filter(|&e| e > 0.0).collect();
            let mean_ext = if ext.is_empty() { 0.0 } else { ext.iter().sum::<f64>() / ext.len() as f64 };
            let mut by: Vec<&str> = phases.iter().filter_map(|o| o.by).collect();
            by.sort_unstable();
            let mut counted: Vec<String> = Vec::new();
            for b in by.chunk_by(|x, y| x == y) {
                counted.push(format!("{} {}", b[0], b.len()));
            }
            format!(
                "failed by: {}; comparison phases extended: {:.1}% (mean +{:.0} s), held after +{MAX_EXTENSION_S:.0} s: {:.2}%",
                if counted.is_empty() { "-".to_string() } else { counted.join(", ") },
                late as f64 * 100.0 / compared as f64,
                mean_ext,
                held as f64 * 100.0 / compared as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:<36} {:>16} {:>7.2}% {:>9.2}%   {}",
            name,
            format!("{false_alarms} / {aa_runs}"),
            false_alarms as f64 * 100.0 / aa_runs as f64,
            upper95(false_alarms, aa_runs) * 100.0,
            note
        );
    }
    let _ = writeln!(out);
    print!("{}", &out[printed..]);
    printed = out.len();

    // Near A/A: real versions are never identical. Slower by less than the margin must pass.
    let _ = writeln!(
        out,
        "Near A/A: {near_runs} rollouts each (4 phases, evidence carried), the new version slower than the stable by less than the margin"
    );
    let _ = writeln!(
        out,
        "  {:<22} {:<40} {:>16} {:>10} {:>16}",
        "case", "analyzer", "false rollbacks", "held", "passed all"
    );
    for case in [Case::Slower2, Case::Slower5] {
        let runs: Vec<Vec<PhaseRun>> =
            parallel(near_runs, |r| run_rollout(&judges, &PLAN, |_| case, &[3, case as u64, r as u64]));
        for (a, name) in names.iter().enumerate().take(n_seq) {
            let failed = runs.iter().filter(|ph| ph.iter().any(|p| p.outcomes[a].failed_at.is_some())).count();
            let held = runs
                .iter()
                .filter(|ph| {
                    ph.iter().any(|p| {
                        p.outcomes[a].ran && p.outcomes[a].failed_at.is_none() && p.outcomes[a].extension_s.is_none()
                    })
                })
                .count();
            let passed = near_runs - failed - held;
            if a == 0 {
                let rate = failed as f64 / near_runs as f64;
                bars.push((
                    format!("{}: false rollbacks < 1 in 200 rollouts: {:.2}%", case.name(), rate * 100.0),
                    rate < 0.005,
                ));
                bars.push((
                    format!(
                        "{}: passes every phase on its own in >= 96% of rollouts: {:.1}%",
                        case.name(),
                        passed as f64 * 100.0 / near_runs as f64
                    ),
                    passed as f64 >= 0.96 * near_runs as f64,
                ));
            }
            let _ = writeln!(
                out,
                "  {:<22} {:<40} {:>16} {:>10} {:>16}",
                case.name(),
                name,
                format!("{failed} / {near_runs}"),
                format!("{held}"),
                format!("{passed} / {near_runs}")
            );
        }
    }
    let _ = writeln!(out);
    print!("{}", &out[printed..]);
    printed = out.len();

    // Regressions: the new version bad from its first request, in the first phase of a plan
    // starting at 10% and of one starting at 25%; and bad only from the 25% phase, after a
    // clean 10% phase (the cost of keeping budget for late regressions).
    let cases = [Case::Hard, Case::Subtle, Case::TailP99, Case::Variance, Case::SomeUsers];
    let _ = writeln!(
        out,
        "Regressions: {reg_runs} runs per row; cell = median seconds into the phase to detect (runs never detected count as late) / detected within {PHASE_S:.0} s"
    );
    let _ = writeln!(out, "  10%: first phase of 10/25/50/100; 25%: first phase of 25/50/100;");
    let _ = writeln!(
        out,
        "  25% late: phase 2 of 10/25/50/100, the new version healthy in phase 1 and bad from phase 2 on"
    );
    let _ = write!(out, "  {:<30} {:>8}", "case", "weight");
    for name in &names {
        let _ = write!(out, " | {:>20}", short(name));
    }
    let _ = writeln!(out);
    let n_all = names.len();
    let fresh: Vec<Option<Vec<PhaseWindow>>> = vec![Some(Vec::new()); n_seq];
    for case in cases {
        let late_row = matches!(case, Case::Subtle | Case::TailP99);
        for (row, label) in [(0u64, "10%"), (1, "25%"), (2, "25% late")] {
            if row == 2 && !late_row {
                continue;
            }
            let runs: Vec<Vec<Outcome>> = parallel(reg_runs, |r| {
                let s = seed(&[2, case as u64, row, r as u64]);
                match row {
                    0 => run_phase(&judges, case, &PLAN, 0, s, false, &fresh).outcomes,
                    1 => run_phase(&judges, case, &[2500, 5000, 10_000], 0, s, false, &fresh).outcomes,
                    _ => {
                        // Failed or held in phase 1: no phase 2, no detection in it.
                        let first = run_phase(&judges, Case::AA, &PLAN, 0, s, true, &fresh);
                        let carried: Vec<Option<Vec<PhaseWindow>>> =
                            first.windows.iter().map(|w| w.as_ref().map(|w| vec![w.clone()])).collect();
                        run_phase(&judges, case, &PLAN, 1, seed(&[s, 1]), false, &carried).outcomes
                    }
                }
            });
            let _ = write!(out, "  {:<30} {:>8}", case.name(), label);
            for a in 0..n_all {
                let times: Vec<f64> = runs.iter().filter_map(|o| o[a].failed_at).collect();
                let rate = times.len() as f64 * 100.0 / reg_runs as f64;
                let m = median(times, reg_runs);
                let bar = match (case, row) {
                    (Case::Hard, 0 | 1) => Some(1.0),
                    (Case::Subtle | Case::TailP99, 0) => Some(30.0),
                    (Case::Subtle | Case::TailP99, 1) => Some(15.0),
                    _ => None,
                };
                if let (0, Some(bar)) = (a, bar) {
                    let shown = m.map_or(format!("> {PHASE_S:.0} s"), |m| format!("{m:.1} s"));
                    bars.push((
                        format!("{} at {label} detected in < {bar} s: {shown}", case.name()),
                        m.is_some_and(|m| m < bar),
                    ));
                }
                let cell = match m {
                    Some(m) => format!("{m:.1} s / {rate:.0}%"),
                    None => format!("> {PHASE_S:.0} s / {rate:.0}%"),
                };
                let _ = write!(out, " | {cell:>20}");
            }
            let _ = writeln!(out);
            print!("{}", &out[printed..]);
            printed = out.len();
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "bars (design.md), {}:", names[0]);
    for (bar, met) in &bars {
        let _ = writeln!(out, "  {:<8} {bar}", if *met { "met" } else { "NOT MET" });
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "elapsed: {:.1} s", started.elapsed().as_secs_f64());
    print!("{}", &out[printed..]);
    if bars.iter().any(|(_, met)| !met) {
        std::process::exit(3);
    }
}

fn short(name: &str) -> String {
    if let Some(alpha) = name.strip_prefix("ringfence sequential ") {
        return format!("sequential {alpha}");
    }
    match name.find(" (") {
        Some(i) => name[..i].to_string(),
        None => name.split(" / ").next().unwrap_or(name).chars().take(20).collect(),
    }
}
