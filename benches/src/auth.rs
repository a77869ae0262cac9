//! The identity benchmarks: a server with the whole request path of an authenticated
//! route (rate limit, token verification, tenant resolution, permission check), its login
//! throughput against what argon2 allows, and a login flood beside authenticated reads.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use saas_auth::{principal::PrincipalTenant, rbac::RequirePermission, service::Auth};
use saas_core::http::guard::{Guarded, Guards};
use saas_core::{
    cache::MemoryCache,
    config::Config,
    db::{Db, migrate},
    http::{
        HttpService, HttpStack, RateLimitLayer,
        rate_limit::{MemoryRateLimiter, Quota},
    },
};
use saas_tenancy::{NewTenant, Tenants, resolve::TenantLayer};
use secrecy::SecretString;
use tower::Layer as _;

use crate::{
    load::{self, Target},
    stats::Interval,
};

const EMAIL: &str = "ada@acme.test";
const PASSWORD: &str = "correct horse battery staple";

/// The identity layers around the routes, as [`AuthServer::identity`] has them.
pub(crate) type IdentityService = Guarded<Router>;

/// The benchmark route with the `RequirePermission` layer instead of the attribute.
pub(crate) const LAYERED_PING: &str = "/v1/ping-layered";

/// A tenant `acme` with one member, served with the whole stack.
pub(crate) struct AuthServer {
    pub(crate) router: HttpService,
    /// The same routes behind the identity layers alone (rate limit, token verification,
    /// tenant resolution, permission check), without the stack's edge (request ids, log
    /// context, metrics, timeout, problem+json): the "full stack" as the identity issue names it.
    pub(crate) identity: IdentityService,
    /// A member's access token (`*:read`, so `invoices:read`).
    pub(crate) token: String,
    /// An API key of the member, granting `invoices:read`.
    pub(crate) api_key: String,
    pub(crate) auth: Auth,
    _dir: tempfile::TempDir,
}

/// Builds the server on SQLite in a temporary directory, with the default (OWASP) argon2
/// parameters, as many hashing threads as cores, and `queued_hashes` (`auth.queued_hashes`).
pub(crate) async fn server(queued_hashes: Option<usize>) -> anyhow::Result<AuthServer> {
    let dir = tempfile::tempdir()?;
    let mut config = Config { data_dir: dir.path().to_owned(), ..Default::default() };
    config.auth.queued_hashes = queued_hashes;
    let db = Db::connect(&format!("sqlite://{}/bench.db", dir.path().display()), Default::default()).await?;
    let migrations = [&saas_core::events::MIGRATIONS, &saas_tenancy::MIGRATIONS, &saas_auth::MIGRATIONS];
    migrate::run(&db, &migrations).await?;
    let cache = Arc::new(MemoryCache::new(10_000));
    let tenants = Tenants::new(db.clone(), cache.clone());
    let tenant = tenants.provision(NewTenant { slug: "acme".into(), name: "Acme".into(), plan: None }).await?;
    let auth = Auth::from_config(db.clone(), cache.clone(), &config).await?;
    let password = SecretString::from(PASSWORD);
    let member = auth.create_user(tenant.id, EMAIL, None, &password, &["member"]).await?;
    let (api_key, _) = auth
        .api_keys()
        .create(tenant.id, member.id, &["*:read".to_owned()], "bench", &["invoices:read".to_owned()], None)
        .await?;
    let context = tenant.context();
    let token = auth.login(&context, EMAIL, &password, None).await?.access_token;

    let (auth_routes, auth_api) =
        saas_auth::api::router(auth.clone(), saas_tenancy::admin::PlatformAdmins::new(db.clone(), None))
            .split_for_parts();
    let routes = Router::new()
        .route("/v1/ping", get(read_ping))
        // The same check as a layer, for the in-process comparison of the two forms.
        .merge(Router::new().route(LAYERED_PING, get(crate::ping)).route_layer(RequirePermission::new("invoices:read")))
        .merge(auth_routes);
    // A limit no benchmark client reaches: it runs on every request. (`saas serve` also has
    // an idempotency store, which keeps its limiter a layer of its own, outside the guards.)
    let limiter =
        RateLimitLayer::new(Arc::new(MemoryRateLimiter::new()), Quota::per_second(10_000_000).burst(10_000_000));
    let tenant_layer =
        TenantLayer::new(tenants, &config.tenancy.resolution, None).with_token(Arc::new(PrincipalTenant));
    let identity = Guards::default()
        .rate_limit(limiter.clone())
        .and(auth.layer())
        .and(tenant_layer.clone())
        .layer(routes.clone().with_state(()));
    let router = HttpStack::new()
        .routes(["/v1/ping", LAYERED_PING])
        .routes(auth_api.paths.paths.keys())
        .rate_limit(limiter)
        .guard(auth.layer())
        .guard(tenant_layer)
        .apply(routes);
    Ok(AuthServer { router, identity, token, api_key, auth, _dir: dir })
}

/// The benchmark's JSON route behind the permission check, in its cheaper form: the
/// attribute checks in an extractor, where the `RequirePermission` layer (as a
/// `route_layer`) adds one more boxed service around the route, about 870 instructions a
/// request (see the benchmarks chapter).
#[saas_macros::require_permission("invoices:read")]
async fn read_ping() -> axum::Json<serde_json::Value> {
    crate::ping().await
}

/// `GET /v1/ping` as the member.
pub(crate) fn read(token: &str) -> Target {
    Target::get("/v1/ping").header("authorization", format!("Bearer {token}"))
}

/// `POST /v1/auth/login` of the member.
fn login() -> Target {
    Target::post_json("/v1/auth/login", &serde_json::json!({ "email": EMAIL, "password": PASSWORD }))
        .header("x-tenant-id", "acme")
}

/// Mean seconds of one argon2 check with the server's parameters, on one core: `checks`
/// checks in a row.
async fn argon2_seconds(auth: &Auth, hash: &str, checks: u32) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..checks {
        auth.passwords().verify(Some(hash), &SecretString::from(PASSWORD)).await?;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(checks))
}

/// Argon2 checks timed at the start of each turn of the login throughput test.
const CHECKS_A_TURN: u32 = 3;

/// How long logins run in each turn of the login throughput test: long enough for about
/// thirty logins a hashing thread.
const LOGIN_SLICE: Duration = Duration::from_secs(1);

/// How long reads run alone, and beside the flood, in each turn of the flood test: logins
/// take tens of milliseconds, so a slice holds many, and the flood is on long enough for
/// the shedding to settle.
const FLOOD_SLICE: Duration = Duration::from_millis(250);

/// Connections of the login flood. A connection whose login holds a hashing place skips
/// its turns until answered, so there are many more of them than places.
const FLOODERS: usize = 128;

/// Login throughput against `cores ÷ argon2 time` (for about half of `time`), then a flood
/// of logins at ten times that beside closed-loop authenticated reads (for about `time` in
/// all, reads alone and beside the flood taking turns).
pub(crate) async fn logins(
    addr: std::net::SocketAddr,
    server: &AuthServer,
    time: Duration,
    connections: usize,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (read, login) = (read(&server.token), login());
    let hash = server.auth.passwords().hash(&SecretString::from(PASSWORD)).await?;
    let argon2 = argon2_seconds(&server.auth, &hash, 20).await?;
    let ideal = cores as f64 / argon2;
    let places = server.auth.passwords().places();
    println!("\n== logins: argon2id m=19 MiB t=2 p=1, {cores} cores, {places} places (hashing or waiting) ==");
    println!("argon2 check {:.1} ms on one core: at most {ideal:.1} logins/s", argon2 * 1000.0);
    // Each turn times argon2 alone on one core, then offers logins: the machine's speed
    // drifts by more than the goal's margin from one second to the next (see `overhead`),
    // so each turn's throughput is compared with its own ideal. One client per place
    // (hashing thread or waiting place) keeps every core hashing without any being refused.
    let turns = ((time.as_secs_f64() / 2.0) / LOGIN_SLICE.as_secs_f64()).round().max(6.0) as usize;
    // CPU of the server's threads (request handling, hashing, SQLite) and of this generator.
    let cpu_now = || (SERVER_THREADS.map(crate::rss::thread_cpu), crate::rss::this_thread_cpu(), Instant::now());
    let mut clients = load::Connections::open(addr, places).await?;
    let (mut logins, mut ratios, mut checked) = (load::Report::empty()?, Vec::with_capacity(turns), 0.0);
    let mut cpu = Cpu::default();
    // Argon2 is timed before and after each slice of logins (the time after one slice is
    // the time before the next), and the slice is compared with their mean: the machine's
    // speed drifts within a turn too.
    let mut argon2_before = argon2_seconds(&server.auth, &hash, CHECKS_A_TURN).await?;
    for _ in 0..turns {
        let before = cpu_now();
        let turn = clients.run(&login, LOGIN_SLICE).await?;
        cpu.add_since(before, cpu_now());
        let argon2_after = argon2_seconds(&server.auth, &hash, CHECKS_A_TURN).await?;
        let argon2 = (argon2_before + argon2_after) / 2.0;
        checked += argon2;
        ratios.push(turn.rps() / (cores as f64 / argon2));
        logins.absorb(turn)?;
        argon2_before = argon2_after;
    }
    let ratio = Interval::of_median(ratios);
    println!(
        "login throughput {:>6.1} logins/s  p50 {:>6.1} ms  p99 {:>6.1} ms  refused {}  (argon2 {:.1} ms a check between turns)",
        logins.rps(),
        logins.p50_ms(),
        logins.p99_ms(),
        logins.errors,
        checked * 1000.0 / turns as f64
    );
    println!(
        "login throughput / ideal: {ratio} over {turns} turns of {} ms each, {}",
        LOGIN_SLICE.as_millis(),
        ratio.verdict(0.90)
    );
    cpu.print("logins", "a login", &logins);

    // Reads alone and reads during the flood take turns, a slice each (which comes first
    // alternating), and each turn's two throughputs are compared: the machine's speed
    // drifts by more than the flood takes (see `overhead`).
    let flood_rate = 10.0 * ideal;
    let turns = (time.as_secs_f64() / (2.0 * FLOOD_SLICE.as_secs_f64())).round().max(6.0) as usize;
    let (mut readers, mut flooders) =
        (load::Connections::open(addr, connections).await?, load::Connections::open(addr, FLOODERS).await?);
    let (mut alone, mut in_flood, mut flood) = (load::Report::empty()?, load::Report::empty()?, load::Report::empty()?);
    // CPU of the server's threads and of this generator, reads alone and beside the flood.
    let (mut cpu_alone, mut cpu_flooded) = (Cpu::default(), Cpu::default());
    let mut ratios = Vec::with_capacity(turns);
    for turn in 0..turns {
        let (mut alone_rps, mut in_flood_rps) = (0.0, 0.0);
        for flooded in [turn % 2 == 1, turn % 2 == 0] {
            let before = cpu_now();
            if !flooded {
                let reads = readers.run(&read, FLOOD_SLICE).await?;
                cpu_alone.add_since(before, cpu_now());
                alone_rps = reads.rps();
                alone.absorb(reads)?;
                continue;
            }
            let (reads, logins) =
                tokio::join!(readers.run(&read, FLOOD_SLICE), flooders.run_paced(&login, flood_rate, FLOOD_SLICE));
            cpu_flooded.add_since(before, cpu_now());
            let reads = reads?;
            in_flood_rps = reads.rps();
            in_flood.absorb(reads)?;
            // Every login sent was answered when the run returned: the next slice starts
            // with none in flight.
            flood.absorb(logins?)?;
        }
        ratios.push(in_flood_rps / alone_rps);
    }
    for (when, r) in [("alone", &alone), ("in flood", &in_flood)] {
        println!("reads {when:<8} {:>9.0} req/s  p99 {:>7.3} ms", r.rps(), r.p99_ms());
    }
    let ratio = Interval::of_median(ratios);
    println!(
        "reads in flood / alone: {ratio} over {turns} turns of {} ms each, {}",
        FLOOD_SLICE.as_millis(),
        ratio.verdict(0.90)
    );
    println!(
        "login flood      {:>9.0} offered/s (target {flood_rate:.0}): {} signed in, {} shed 503, {} shed 429, {} other; p99 {:.1} ms",
        // Sent during the slices; the last answers of a slice come after it.
        flood.answered() as f64 / (turns as f64 * FLOOD_SLICE.as_secs_f64()),
        flood.count(200),
        flood.count(503),
        flood.count(429),
        flood.answered() - flood.count(200) - flood.count(503) - flood.count(429),
        flood.p99_ms()
    );
    // The flood's slices last until its last login is answered, a little past the reads.
    cpu_alone.print("alone", "a read", &alone);
    cpu_flooded.print("in flood", "a read, logins included", &in_flood);
    Ok(())
}

/// The server's threads whose CPU [`Cpu`] counts: request handling, hashing and SQLite, by
/// their names as the kernel keeps them (cut to 15 bytes: "sqlx-sqlite-worker-N").
const SERVER_THREADS: [&str; 3] = ["auth-server", "argon2-", "sqlx-sqlite-wor"];

/// CPU time of the server's threads (request handling, hashing, SQLite) and of the load
/// generator's thread, and the time they were measured over, added up over slices.
#[derive(Default)]
struct Cpu {
    server: [Duration; 3],
    generator: Duration,
    wall: Duration,
}

/// The CPU times of [`Cpu`] at one moment.
type CpuAt = ([Duration; 3], Duration, Instant);

impl Cpu {
    fn add_since(&mut self, (server_before, generator_before, start): CpuAt, (server, generator, end): CpuAt) {
        for (sum, (now, before)) in self.server.iter_mut().zip(server.iter().zip(server_before)) {
            *sum += now.saturating_sub(before);
        }
        self.generator += generator.saturating_sub(generator_before);
        self.wall += end - start;
    }

    /// Prints the cores each part used over the measured time, and the request handling's
    /// CPU per answer of `report` (`each` says what an answer is).
    fn print(&self, when: &str, each: &str, report: &load::Report) {
        let secs = self.wall.as_secs_f64();
        let [handling, hashing, sqlite] = self.server.map(|t| t.as_secs_f64() / secs);
        println!(
            "CPU {when:<8} (cores): request handling {handling:.2} ({:.1} µs {each}), password hashing {hashing:.2}, SQLite {sqlite:.2}, load generator {:.2}",
            self.server[0].as_secs_f64() * 1e6 / report.answered() as f64,
            self.generator.as_secs_f64() / secs
        );
    }
}
