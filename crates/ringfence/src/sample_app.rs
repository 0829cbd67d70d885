//! `ringfence sample-app`: a small HTTP service whose misbehaviour is set per version.
//!
//! The demo, the integration tests and the benchmarks deploy this service as their "workload":
//! a release is the same binary with different flags (or env vars, since the process executor
//! passes release configuration through the environment). Each kind of bad release the
//! controller must catch has a knob here: errors for everyone, errors for some users, added
//! latency (fixed or log-normal), a slow tail, a crash on start and a crash under load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Response header carrying the version on every response, so a client can tell which release
/// answered even when a router in between does not add its own header.
pub const VERSION_HEADER: &str = "x-sample-version";

/// Cookie read for the user key when the user header is absent.
pub const USER_COOKIE: &str = "rf_user";

/// Exit status for `--crash-on-start`.
pub const EXIT_CRASH_ON_START: i32 = 3;

/// Exit status for `--crash-after`.
pub const EXIT_CRASH_AFTER: i32 = 4;

#[derive(Debug, Clone, clap::Args)]
pub struct SampleAppArgs {
    /// Address to listen on.
    #[arg(long, env = "SAMPLE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Version string reported in responses.
    #[arg(long, env = "SAMPLE_VERSION", default_value = "dev")]
    pub version: String,
    /// Fraction of requests answered with HTTP 500, 0.0..=1.0.
    #[arg(long, env = "SAMPLE_ERROR_RATE", default_value_t = 0.0)]
    pub error_rate: f64,
    /// Added latency per request in milliseconds: the median when `--latency-sigma` is set.
    #[arg(long, env = "SAMPLE_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Spread of the added latency: each request takes `latency_ms * exp(S * Z)` with Z a standard
    /// normal draw (log-normal, median `latency_ms`, p99 `latency_ms * exp(2.326 * S)`), the shape
    /// of real service latency. 0 keeps every request at exactly `latency_ms`.
    #[arg(long, env = "SAMPLE_LATENCY_SIGMA", default_value_t = 0.0)]
    pub latency_sigma: f64,
    /// Extra random latency: with this probability a request takes `slow_ms` instead (for
    /// tail-latency regressions).
    #[arg(long, env = "SAMPLE_SLOW_FRACTION", default_value_t = 0.0)]
    pub slow_fraction: f64,
    /// Latency in milliseconds of the requests picked by `--slow-fraction`.
    #[arg(long, env = "SAMPLE_SLOW_MS", default_value_t = 0)]
    pub slow_ms: u64,
    /// Exit with status 3 right after start, before listening (a release that crashes on start).
    #[arg(long, env = "SAMPLE_CRASH_ON_START", default_value_t = false)]
    pub crash_on_start: bool,
    /// Exit with status 4 after serving this many requests (a release that crashes under load).
    /// 0 = never.
    #[arg(long, env = "SAMPLE_CRASH_AFTER", default_value_t = 0)]
    pub crash_after: u64,
    /// `--error-rate` applies only once this many requests were served: a regression that
    /// shows after a release was promoted.
    #[arg(long, env = "SAMPLE_ERRORS_AFTER", default_value_t = 0)]
    pub errors_after: u64,
    /// Fail (HTTP 500) only for some users: a percentage "10%" of user keys (stable hash), or a
    /// comma-separated list of key prefixes "beta-,qa-".
    #[arg(long, env = "SAMPLE_FAIL_USERS")]
    pub fail_users: Option<String>,
    /// Header carrying the user key (the router's sticky header); the cookie `rf_user` is read
    /// too.
    #[arg(long, env = "SAMPLE_USER_HEADER", default_value = "x-user-id")]
    pub user_header: String,
    /// Fail (HTTP 500) the requests of users for whom this boolean flag is on, evaluated over
    /// OFREP with the user as targeting key: a broken new code path behind a flag.
    #[arg(long, env = "SAMPLE_FAIL_ON_FLAG")]
    pub fail_on_flag: Option<String>,
    /// OFREP base URL (the process executor sets it to the workload's router).
    #[arg(long, env = "OFREP_ENDPOINT")]
    pub ofrep_endpoint: Option<String>,
    /// SQLite database the app works on: a release's migration changes it, `--needs` reads it.
    #[arg(long, env = "SAMPLE_DB")]
    pub db: Option<std::path::PathBuf>,
    /// SQL run once on the database at start (statements separated by `;`), recorded under
    /// `--migration-id` so that a restart or another replica does not run it again.
    #[arg(long, env = "SAMPLE_MIGRATE", requires = "db")]
    pub migrate: Option<String>,
    #[arg(long, env = "SAMPLE_MIGRATION_ID", default_value = "migration")]
    pub migration_id: String,
    /// Schema elements the app's code reads (`table.column`, comma-separated): while one is
    /// missing from the database every answer is a 500, as code reading a dropped column fails.
    #[arg(long, env = "SAMPLE_NEEDS", requires = "db")]
    pub needs: Option<String>,
}

/// Which users get an injected failure, parsed from `--fail-users`.
#[derive(Debug, Clone, PartialEq)]
pub enum FailUsers {
    /// This percentage (0..=100) of user keys, chosen by a stable hash of the key.
    Percent(f64),
    /// Keys starting with any of these prefixes.
    Prefixes(Vec<String>),
}

impl FailUsers {
    /// Parses "10%" or "beta-,qa-". The error says what is wrong but not which flag; callers add
    /// that.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim();
        if text.is_empty() {
            return Err("is empty; expected a percentage like \"10%\" or key prefixes like \"beta-,qa-\"".into());
        }
        if let Some(number) = text.strip_suffix('%') {
            let percent: f64 =
                number.trim().parse().map_err(|_| format!("{raw:?} is not a percentage like \"10%\""))?;
            if !(0.0..=100.0).contains(&percent) {
                return Err(format!("{raw:?} is out of range; the percentage must be 0%..=100%"));
            }
            return Ok(Self::Percent(percent));
        }
        let mut prefixes = Vec::new();
        for part in text.split(',') {
            let prefix = part.trim();
            if prefix.is_empty() {
                return Err(format!(
                    "{raw:?} has an empty prefix; expected comma-separated key prefixes like \"beta-,qa-\""
                ));
            }
            // A '%' inside a list is almost certainly a mistyped percentage ("10%,beta-"); treating
            // it as a literal prefix would silently fail nobody.
            if prefix.contains('%') {
                return Err(format!(
                    "{raw:?} mixes a percentage into a prefix list; give either one percentage like \"10%\" or prefixes like \"beta-,qa-\""
                ));
            }
            prefixes.push(prefix.to_owned());
        }
        Ok(Self::Prefixes(prefixes))
    }

    /// Whether this user key is selected. Requests without a user key are never selected: the
    /// point of this knob is a failure confined to some users.
    pub fn matches(&self, user: Option<&str>) -> bool {
        let Some(user) = user else { return false };
        match self {
            Self::Percent(percent) => {
                // Basis points keep fractional percentages like 0.5% meaningful.
                let threshold = (percent * 100.0).round() as u64;
                user_bucket(user) < threshold
            }
            Self::Prefixes(prefixes) => prefixes.iter().any(|p| user.starts_with(p.as_str())),
        }
    }
}

/// Maps a user key to one of 10,000 buckets, the same on every run, process and machine, so a
/// user who fails keeps failing. FNV-1a is used rather than the router's sticky hash on purpose:
/// if both used the same hash, "10% of users" on a canary would correlate with which users the
/// router sends to that canary. The 64-bit finalizer spreads FNV's weak low bits.
pub fn user_bucket(user: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    ((u128::from(hash) * 10_000) >> 64) as u64
}

/// Largest accepted `--latency-sigma`: at 3 the p99 is already 1,000 times the median, beyond any
/// service worth simulating; a larger value is far more likely a typo (30 for 0.3).
pub const MAX_LATENCY_SIGMA: f64 = 3.0;

/// Longest injected delay. A log-normal draw has no upper bound and a `Duration` does; one freak
/// draw must neither panic nor hold a connection for days.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Validates args, naming the flag, its env twin and the offending value in each error.
impl SampleAppArgs {
    /// A well-behaved sample app of `version` on any free loopback port: the starting point
    /// of tests and benchmarks, which change the fields they are about.
    pub fn on_any_port(version: &str) -> SampleAppArgs {
        SampleAppArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            version: version.into(),
            error_rate: 0.0,
            latency_ms: 0,
            latency_sigma: 0.0,
            slow_fraction: 0.0,
            slow_ms: 0,
            crash_on_start: false,
            crash_after: 0,
            errors_after: 0,
            fail_users: None,
            user_header: "x-user-id".into(),
            fail_on_flag: None,
            ofrep_endpoint: None,
            db: None,
            migrate: None,
            migration_id: "migration".into(),
            needs: None,
        }
    }
}

pub fn validate(args: &SampleAppArgs) -> Result<(), String> {
    check_fraction(args.error_rate, "--error-rate", "SAMPLE_ERROR_RATE")?;
    // `contains` is false for NaN too.
    if !(0.0..=MAX_LATENCY_SIGMA).contains(&args.latency_sigma) {
        return Err(format!(
            "--latency-sigma (SAMPLE_LATENCY_SIGMA) must be between 0 and {MAX_LATENCY_SIGMA} (the log-normal spread: \
             0.5 puts p99 at 3.2 times the median), got {}",
            args.latency_sigma
        ));
    }
    check_fraction(args.slow_fraction, "--slow-fraction", "SAMPLE_SLOW_FRACTION")?;
    if let Some(raw) = &args.fail_users {
        FailUsers::parse(raw).map_err(|e| format!("--fail-users (SAMPLE_FAIL_USERS): {e}"))?;
    }
    HeaderName::try_from(args.user_header.as_str()).map_err(|_| {
        format!("--user-header (SAMPLE_USER_HEADER): {:?} is not a valid HTTP header name", args.user_header)
    })?;
    HeaderValue::try_from(args.version.as_str()).map_err(|_| {
        format!("--version (SAMPLE_VERSION): {:?} cannot be sent in an HTTP header; use visible ASCII", args.version)
    })?;
    Ok(())
}

fn check_fraction(value: f64, flag: &str, env: &str) -> Result<(), String> {
    // `contains` is false for NaN, which clap happily parses from "nan".
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("{flag} ({env}) must be between 0.0 and 1.0, got {value}"))
    }
}

/// `median * exp(sigma * z)`, capped at [`MAX_DELAY`]: with `z` a standard normal draw, a
/// log-normal latency with that median.
fn lognormal(median: Duration, sigma: f64, z: f64) -> Duration {
    let secs = median.as_secs_f64() * (sigma * z).exp();
    Duration::try_from_secs_f64(secs).map_or(MAX_DELAY, |d| d.min(MAX_DELAY))
}

/// One draw from the standard normal distribution (Box-Muller), so the service needs no
/// distribution crate for its one use of one.
fn standard_normal() -> f64 {
    // `random()` is in [0, 1); 1 - u is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rand::random::<f64>();
    let u2 = rand::random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The database, the schema elements the code reads, and the last check (when, what was missing).
struct SchemaCheck {
    path: std::path::PathBuf,
    needs: Vec<(String, String)>,
    last: std::sync::Mutex<Option<(std::time::Instant, Option<String>)>>,
}

/// Called once when `crash_after` requests have been served; the process exits in production and
/// a test records the call instead.
type CrashHook = Arc<dyn Fn(u64) + Send + Sync>;

struct AppState {
    version: String,
    version_header: HeaderValue,
    error_rate: f64,
    latency: Duration,
    latency_sigma: f64,
    slow_fraction: f64,
    slow: Duration,
    fail_users: Option<FailUsers>,
    user_header: HeaderName,
    crash_after: u64,
    errors_after: u64,
    served: AtomicU64,
    on_crash: CrashHook,
    /// (flag key, OFREP evaluation URL) when a flag guards the failing path.
    flag: Option<(String, String)>,
    http: crate::http::HttpClient,
    /// The database and the schema elements the code reads, with the last check.
    db: Option<SchemaCheck>,
}

impl AppState {
    fn new(args: &SampleAppArgs, on_crash: CrashHook) -> anyhow::Result<Self> {
        validate(args).map_err(anyhow::Error::msg)?;
        let fail_users = args.fail_users.as_deref().map(FailUsers::parse).transpose().map_err(anyhow::Error::msg)?;
        Ok(Self {
            version: args.version.clone(),
            version_header: HeaderValue::try_from(args.version.as_str())?,
            error_rate: args.error_rate,
            latency: Duration::from_millis(args.latency_ms),
            latency_sigma: args.latency_sigma,
            slow_fraction: args.slow_fraction,
            slow: Duration::from_millis(args.slow_ms),
            fail_users,
            user_header: HeaderName::try_from(args.user_header.as_str())?,
            crash_after: args.crash_after,
            errors_after: args.errors_after,
            served: AtomicU64::new(0),
            on_crash,
            flag: match (&args.fail_on_flag, &args.ofrep_endpoint) {
                (Some(key), Some(base)) => {
                    Some((key.clone(), format!("{}/ofrep/v1/evaluate/flags/{key}", base.trim_end_matches('/'))))
                }
                (Some(key), None) => anyhow::bail!(
                    "--fail-on-flag {key} needs --ofrep-endpoint (OFREP_ENDPOINT): where to evaluate the flag"
                ),
                _ => None,
            },
            http: crate::http::HttpClient::new(),
            db: match (&args.db, &args.needs) {
                (Some(path), Some(needs)) => Some(SchemaCheck {
                    path: path.clone(),
                    needs: parse_needs(needs)?,
                    last: std::sync::Mutex::new(None),
                }),
                _ => None,
            },
        })
    }

    /// The first schema element the code reads that the database lacks (checked at most every
    /// 100 ms).
    fn missing_schema(&self) -> Option<String> {
        let SchemaCheck { path, needs, last } = self.db.as_ref()?;
        let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, missing)) = &*last
            && at.elapsed() < Duration::from_millis(100)
        {
            return missing.clone();
        }
        let missing = (|| {
            let db = rusqlite::Connection::open(path).ok()?;
            needs.iter().find_map(|(table, column)| {
                let mut st = db.prepare(&format!("SELECT name FROM pragma_table_info('{table}')")).ok()?;
                let columns: Vec<String> = st.query_map([], |r| r.get(0)).ok()?.flatten().collect();
                (!columns.contains(column)).then(|| format!("{table}.{column}"))
            })
        })();
        *last = Some((std::time::Instant::now(), missing.clone()));
        missing
    }

    /// Whether the guarding flag is on for this user. Like an OpenFeature SDK, any failure to
    /// evaluate means the code default: off.
    async fn flag_on(&self, user: Option<&str>) -> bool {
        let Some((_, url)) = &self.flag else { return false };
        // No user, no targeting key: an empty key would land in some rollout group by chance.
        let body = match user {
            Some(u) => serde_json::json!({"context": {"targetingKey": u}}),
            None => serde_json::json!({"context": {}}),
        };
        let body = bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        match self.http.request(hyper::Method::POST, url, &[], Some(body), Duration::from_secs(1)).await {
            Ok(r) if r.status.is_success() => serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["value"].as_bool())
                .unwrap_or(false),
            _ => false,
        }
    }

    /// The header wins over the cookie because it is what the router's sticky routing keys on.
    fn user_key<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        if let Some(value) = headers.get(&self.user_header)
            && let Ok(user) = value.to_str()
            && !user.is_empty()
        {
            return Some(user);
        }
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, value)| *name == USER_COOKIE && !value.is_empty())
            .map(|(_, value)| value)
    }

    fn delay(&self) -> Duration {
        if self.slow_fraction > 0.0 && rand::random::<f64>() < self.slow_fraction {
            self.slow
        } else if self.latency_sigma > 0.0 {
            lognormal(self.latency, self.latency_sigma, standard_normal())
        } else {
            self.latency
        }
    }

    fn should_fail(&self, user: Option<&str>) -> bool {
        // `random()` is in [0, 1), so 1.0 fails every request and 0.0 none.
        let started = self.served.load(std::sync::atomic::Ordering::Relaxed) >= self.errors_after;
        let random_failure = started && self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate;
        random_failure || self.fail_users.as_ref().is_some_and(|f| f.matches(user))
    }
}

/// Serves until `shutdown` is cancelled, then drains in-flight requests.
///
/// `GET /healthz` answers 200 "ok" and is exempt from injected failures, latency and the
/// `crash_after` count: it reports that the process is up, and the executor polls it for
/// readiness, which must not bring a `crash_after` release down early. Every other path and
/// method gets the configured behaviour.
pub async fn serve(args: SampleAppArgs, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let version = args.version.clone();
    let on_crash: CrashHook = Arc::new(move |served| {
        eprintln!("sample-app {version}: crashing after {served} requests (--crash-after / SAMPLE_CRASH_AFTER)");
        // Give hyper a moment to write the response that triggered the crash, so the client sees
        // the Nth answer and then a dead process, like a real crash under load.
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            std::process::exit(EXIT_CRASH_AFTER);
        });
    });
    serve_with_hook(args, listener, shutdown, on_crash).await
}

async fn serve_with_hook(
    args: SampleAppArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
    on_crash: CrashHook,
) -> anyhow::Result<()> {
    let state = Arc::new(AppState::new(&args, on_crash)?);
    let app = Router::new()
        .route("/healthz", get(healthz))
        .fallback(app_request)
        .layer(middleware::from_fn_with_state(state.clone(), after_response))
        .with_state(state);
    // Nagle's algorithm plus delayed ACKs can add tens of milliseconds to small responses, which
    // would drown the latencies the benchmarks measure.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::trace!("failed to set TCP_NODELAY: {err}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("sample-app server failed")
}

async fn healthz() -> &'static str {
    "ok"
}

async fn app_request(State(state): State<Arc<AppState>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(missing) = state.missing_schema() {
        let body = serde_json::json!({
            "error": format!("this code reads {missing}, which the database no longer has"),
            "version": state.version,
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response();
    }
    let user = state.user_key(&headers);
    let flagged = state.flag_on(user).await;
    let fail = flagged || state.should_fail(user);
    let delay = state.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, body) = if fail {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            if flagged {
                serde_json::json!({ "error": "the new code path behind the flag failed", "version": state.version })
            } else {
                serde_json::json!({ "error": "injected failure", "version": state.version })
            },
        )
    } else {
        (StatusCode::OK, serde_json::json!({ "version": state.version, "user": user, "path": uri.path() }))
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    (status, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// Stamps the version on every response (health checks and 405s included) and counts served
/// requests for `crash_after` and `errors_after`.
async fn after_response(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let counts = request.uri().path() != "/healthz";
    let mut response = next.run(request).await;
    response.headers_mut().insert(VERSION_HEADER, state.version_header.clone());
    if counts && state.crash_after == 0 {
        state.served.fetch_add(1, Ordering::Relaxed);
    }
    if counts && state.crash_after > 0 {
        let served = state.served.fetch_add(1, Ordering::Relaxed) + 1;
        if served == state.crash_after {
            (state.on_crash)(served);
        } else if served > state.crash_after {
            // The process is about to exit; holding later answers makes "serves exactly N
            // requests, then dies" hold even for requests that slip in before the exit lands.
            std::future::pending::<()>().await;
        }
    }
    response
}

/// `table.column,table.column` as pairs.
fn parse_needs(raw: &str) -> anyhow::Result<Vec<(String, String)>> {
    raw.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            let pair = x.split_once('.').filter(|(t, c)| {
                [t, c].iter().all(|p| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
            });
            pair.map(|(t, c)| (t.to_string(), c.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--needs (SAMPLE_NEEDS): expected table.column, found {x:?}"))
        })
        .collect()
}

/// Runs a release's migration once: in one transaction, recorded by id, so that replicas
/// starting together or again run it once.
fn migrate(path: &std::path::Path, id: &str, sql: &str) -> anyhow::Result<()> {
    let mut db =
        rusqlite::Connection::open(path).with_context(|| format!("sample-app: cannot open {}", path.display()))?;
    db.busy_timeout(Duration::from_secs(10))?;
    let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS sample_migrations (id TEXT PRIMARY KEY)")?;
    let done: bool = tx.query_row("SELECT count(*) > 0 FROM sample_migrations WHERE id = ?1", [id], |r| r.get(0))?;
    if !done {
        tx.execute_batch(sql).with_context(|| format!("sample-app: migration {id} failed"))?;
        tx.execute("INSERT INTO sample_migrations (id) VALUES (?1)", [id])?;
        eprintln!("sample-app: migration {id} applied to {}", path.display());
    }
    tx.commit()?;
    Ok(())
}

/// Entry point of `ringfence sample-app`: validates, binds, and serves until SIGINT or SIGTERM.
///
/// `--crash-on-start` exits the process with status 3 before binding, as a release that dies on
/// start would; a caller never sees `run` return in that case.
pub async fn run(args: SampleAppArgs) -> anyhow::Result<()> {
    validate(&args).map_err(anyhow::Error::msg)?;
    if args.crash_on_start {
        // Straight to stderr: the process executor captures it as the reason the release died,
        // and a tracing subscriber may not flush before `exit`.
        eprintln!("sample-app {}: crashing on start (--crash-on-start / SAMPLE_CRASH_ON_START is set)", args.version);
        std::process::exit(EXIT_CRASH_ON_START);
    }
    if let (Some(path), Some(sql)) = (&args.db, &args.migrate) {
        migrate(path, &args.migration_id, sql)?;
    }
    let listener = TcpListener::bind(args.listen).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "sample-app cannot listen on {}: the address is already in use; pick another --listen (SAMPLE_LISTEN)",
                args.listen
            )
        } else {
            anyhow::anyhow!("sample-app cannot listen on {}: {err}", args.listen)
        }
    })?;
    let local = listener.local_addr().context("reading the bound address")?;
    // A fixed, plain line rather than a tracing event: people and scripts wait for it, and its
    // format must not depend on how the subscriber is configured.
    eprintln!("sample-app {} listening on {local}", args.version);

    let shutdown = CancellationToken::new();
    let signals = wait_for_signal().await?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        signals.await;
        tracing::info!("sample-app: shutdown signal received, draining");
        on_signal.cancel();
    });
    serve(args, listener, shutdown).await
}

/// Installs the handlers before returning, so a signal that arrives while the server starts is
/// not lost to the default disposition.
async fn wait_for_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use std::time::Instant;
    use tokio::sync::mpsc;

    fn args(version: &str) -> SampleAppArgs {
        SampleAppArgs::on_any_port(version)
    }

    struct Running {
        addr: SocketAddr,
        shutdown: CancellationToken,
        client: Client<HttpConnector, Empty<Bytes>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    struct Answer {
        status: u16,
        version_header: Option<String>,
        body: serde_json::Value,
        text: String,
    }

    async fn start_with_hook(args: SampleAppArgs, hook: CrashHook) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_with_hook(args, listener, shutdown.clone(), hook));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Running { addr, shutdown, client }
    }

    async fn start(args: SampleAppArgs) -> Running {
        start_with_hook(args, Arc::new(|_| panic!("crash hook must not fire"))).await
    }

    impl Running {
        async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
            let mut request = hyper::Request::get(format!("http://{}{path}", self.addr));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = self.client.request(request.body(Empty::new()).unwrap()).await.unwrap();
            let status = response.status().as_u16();
            let version_header = response.headers().get(VERSION_HEADER).map(|v| v.to_str().unwrap().to_owned());
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            Answer { status, version_header, body, text }
        }

        async fn user(&self, user: &str) -> u16 {
            self.get("/", &[("x-user-id", user)]).await.status
        }
    }

    #[tokio::test]
    async fn healthz_is_ok_and_carries_the_version() {
        let app = start(args("v1")).await;
        let answer = app.get("/healthz", &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.text, "ok");
        assert_eq!(answer.version_header.as_deref(), Some("v1"));
    }

    #[tokio::test]
    async fn other_paths_report_version_user_and_path() {
        let app = start(args("v2.3.1")).await;
        let answer = app.get("/api/items?x=1", &[("x-user-id", "user-7")]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.version_header.as_deref(), Some("v2.3.1"));
        assert_eq!(answer.body, serde_json::json!({ "version": "v2.3.1", "user": "user-7", "path": "/api/items" }));

        let anonymous = app.get("/", &[]).await;
        assert_eq!(anonymous.body["user"], serde_json::Value::Null);

        let from_cookie = app.get("/", &[("cookie", "theme=dark; rf_user=user-9; other=1")]).await;
        assert_eq!(from_cookie.body["user"], "user-9");

        let header_wins = app.get("/", &[("x-user-id", "user-1"), ("cookie", "rf_user=user-2")]).await;
        assert_eq!(header_wins.body["user"], "user-1");
    }

    #[tokio::test]
    async fn error_rate_one_fails_every_request_but_not_healthz() {
        let app = start(SampleAppArgs { error_rate: 1.0, ..args("bad") }).await;
        for _ in 0..20 {
            let answer = app.get("/", &[]).await;
            assert_eq!(answer.status, 500);
            assert_eq!(answer.version_header.as_deref(), Some("bad"));
            assert_eq!(answer.body, serde_json::json!({ "error": "injected failure", "version": "bad" }));
        }
        assert_eq!(app.get("/healthz", &[]).await.status, 200);
    }

    #[tokio::test]
    async fn error_rate_zero_fails_nothing() {
        let app = start(args("good")).await;
        for i in 0..50 {
            assert_eq!(app.user(&format!("user-{i}")).await, 200);
        }
    }

    #[tokio::test]
    async fn fail_users_prefixes_select_those_users_only() {
        let app = start(SampleAppArgs { fail_users: Some("beta-, qa-".into()), ..args("v2") }).await;
        for _ in 0..3 {
            assert_eq!(app.user("beta-1").await, 500);
            assert_eq!(app.user("qa-x").await, 500);
            assert_eq!(app.user("user-1").await, 200);
            assert_eq!(app.user("xbeta-1").await, 200);
        }
        // The cookie is a user key too.
        let answer = app.get("/", &[("cookie", "rf_user=qa-2")]).await;
        assert_eq!(answer.status, 500);
        // Without a user key nobody is selected.
        assert_eq!(app.get("/", &[]).await.status, 200);
    }

    #[tokio::test]
    async fn fail_users_percentage_is_stable_and_roughly_that_share() {
        let app = start(SampleAppArgs { fail_users: Some("10%".into()), ..args("v2") }).await;
        let selector = FailUsers::Percent(10.0);
        let mut failed = 0;
        for i in 0..200 {
            let user = format!("user-{i}");
            let first = app.user(&user).await;
            let expected = if selector.matches(Some(&user)) { 500 } else { 200 };
            assert_eq!(first, expected, "{user}");
            assert_eq!(app.user(&user).await, first, "{user} changed its answer");
            if first == 500 {
                failed += 1;
            }
        }
        assert!((5..=40).contains(&failed), "{failed} of 200 users failed at 10%");
    }

    #[test]
    fn user_buckets_are_fixed_and_spread() {
        // Pinned so that a change of hash, which would silently change who fails in recorded
        // drills and benchmarks, is a deliberate decision.
        assert_eq!(user_bucket("user-0"), 483);
        assert_eq!(user_bucket("user-1"), 2563);
        assert_eq!(user_bucket("beta-1"), 962);
        let all = (0..10_000).map(|i| user_bucket(&format!("user-{i}")));
        let below_half = all.filter(|b| *b < 5_000).count();
        assert!((4_500..=5_500).contains(&below_half), "{below_half}");
        assert!(!FailUsers::Percent(0.0).matches(Some("user-1")));
        assert!(FailUsers::Percent(100.0).matches(Some("user-1")));
    }

    #[tokio::test]
    async fn latency_is_added_before_answering() {
        let app = start(SampleAppArgs { latency_ms: 150, ..args("slow") }).await;
        let started = Instant::now();
        assert_eq!(app.get("/", &[]).await.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(150));

        let slow_tail = start(SampleAppArgs { slow_fraction: 1.0, slow_ms: 120, ..args("tail") }).await;
        let started = Instant::now();
        assert_eq!(slow_tail.get("/", &[]).await.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(120));
    }

    #[test]
    fn latency_sigma_draws_a_log_normal_around_the_median() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let median = Duration::from_millis(20);
        // The transform itself, exactly: z standard deviations above the median's logarithm.
        assert_eq!(lognormal(median, 0.5, 0.0), median);
        assert!((ms(lognormal(median, 0.5, 2.0)) - 20.0 * 1f64.exp()).abs() < 1e-6);
        assert!((ms(lognormal(median, 0.5, -2.0)) - 20.0 / 1f64.exp()).abs() < 1e-6);
        // A draw too large for a Duration is capped instead of panicking.
        assert_eq!(lognormal(median, MAX_LATENCY_SIGMA, 1e6), MAX_DELAY);

        // The draws: median 20 ms and p99 20 * exp(2.326 * 0.5) = 64 ms, within sampling error
        // (20,000 draws: a few percent at the median, under 10% at p99).
        let state =
            AppState::new(&SampleAppArgs { latency_ms: 20, latency_sigma: 0.5, ..args("v1") }, Arc::new(|_| {}))
                .unwrap();
        let mut draws: Vec<f64> = (0..20_000).map(|_| ms(state.delay())).collect();
        draws.sort_by(f64::total_cmp);
        let (p50, p99) = (draws[10_000], draws[19_800]);
        assert!((19.0..=21.0).contains(&p50), "median {p50} ms");
        assert!((58.0..=70.0).contains(&p99), "p99 {p99} ms");

        // Sigma 0 keeps the fixed latency of before.
        let fixed = AppState::new(&SampleAppArgs { latency_ms: 20, ..args("v1") }, Arc::new(|_| {})).unwrap();
        assert!((0..100).all(|_| fixed.delay() == median));

        for bad in [-0.1, MAX_LATENCY_SIGMA + 0.5, f64::NAN, f64::INFINITY] {
            let err = validate(&SampleAppArgs { latency_sigma: bad, ..args("v1") }).unwrap_err();
            assert!(err.contains("--latency-sigma"), "{bad}: {err}");
            assert!(err.contains("SAMPLE_LATENCY_SIGMA"), "{bad}: {err}");
        }
        assert_eq!(validate(&SampleAppArgs { latency_sigma: MAX_LATENCY_SIGMA, ..args("v1") }), Ok(()));
    }

    #[tokio::test]
    async fn crash_after_fires_once_after_the_nth_request() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let app = start_with_hook(
            SampleAppArgs { crash_after: 3, ..args("v1") },
            Arc::new(move |served| {
                let _ = tx.send(served);
            }),
        )
        .await;
        // Health checks do not count.
        for _ in 0..5 {
            assert_eq!(app.get("/healthz", &[]).await.status, 200);
        }
        for _ in 0..2 {
            assert_eq!(app.get("/", &[]).await.status, 200);
        }
        assert!(rx.try_recv().is_err());
        assert_eq!(app.get("/", &[]).await.status, 200);
        assert_eq!(rx.try_recv(), Ok(3));
        // Past the Nth request nothing more is answered, and the hook does not fire again.
        let late = tokio::time::timeout(Duration::from_millis(300), app.get("/", &[])).await;
        assert!(late.is_err(), "request after the crash point was answered");
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn serve_stops_when_cancelled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(args("v1"), listener, shutdown.clone()));
        shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve did not stop").unwrap();
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn run_reports_a_taken_port() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = run(SampleAppArgs { listen: addr, ..args("v1") }).await.unwrap_err().to_string();
        assert!(err.contains("already in use"), "{err}");
        assert!(err.contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn validate_names_the_flag_and_value() {
        assert_eq!(validate(&args("v1")), Ok(()));

        let err = validate(&SampleAppArgs { error_rate: 1.5, ..args("v1") }).unwrap_err();
        assert!(err.contains("--error-rate"), "{err}");
        assert!(err.contains("SAMPLE_ERROR_RATE"), "{err}");
        assert!(err.contains("1.5"), "{err}");

        let err = validate(&SampleAppArgs { error_rate: f64::NAN, ..args("v1") }).unwrap_err();
        assert!(err.contains("--error-rate"), "{err}");

        let err = validate(&SampleAppArgs { slow_fraction: -0.1, ..args("v1") }).unwrap_err();
        assert!(err.contains("--slow-fraction"), "{err}");

        for bad in ["abc%", "150%", "", "beta-,,qa-", "10%,beta-"] {
            let err = validate(&SampleAppArgs { fail_users: Some(bad.into()), ..args("v1") }).unwrap_err();
            assert!(err.contains("--fail-users"), "{bad:?}: {err}");
            assert!(err.contains("SAMPLE_FAIL_USERS"), "{bad:?}: {err}");
        }

        let err = validate(&SampleAppArgs { user_header: "bad header".into(), ..args("v1") }).unwrap_err();
        assert!(err.contains("--user-header"), "{err}");

        let err = validate(&args("v1\nv2")).unwrap_err();
        assert!(err.contains("--version"), "{err}");
    }

    #[test]
    fn fail_users_parses_both_forms() {
        assert_eq!(FailUsers::parse("10%"), Ok(FailUsers::Percent(10.0)));
        assert_eq!(FailUsers::parse(" 0.5 % "), Ok(FailUsers::Percent(0.5)));
        assert_eq!(FailUsers::parse("beta-, qa-"), Ok(FailUsers::Prefixes(vec!["beta-".into(), "qa-".into()])));
    }

    #[test]
    fn every_option_has_an_env_twin() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: SampleAppArgs,
        }
        let command = <Cli as clap::CommandFactory>::command();
        for arg in command.get_arguments() {
            if arg.get_id() == "help" {
                continue;
            }
            assert!(arg.get_env().is_some(), "--{} has no env var", arg.get_id());
        }
        let parsed = Cli::try_parse_from([
            "sample-app",
            "--listen",
            "127.0.0.1:9000",
            "--version",
            "v9",
            "--error-rate",
            "0.25",
            "--fail-users",
            "10%",
            "--crash-on-start",
        ])
        .unwrap()
        .args;
        assert_eq!(parsed.version, "v9");
        assert_eq!(parsed.error_rate, 0.25);
        assert!(parsed.crash_on_start);
    }
}
