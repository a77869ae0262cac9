//! `saas-bench`: what the saas-core layer stack and the identity layers cost, what logins
//! achieve against argon2's cost, and how much memory `saas serve` uses.
//!
//! ```text
//! cargo build --release -p saas-server -p saas-bench
//! target/release/saas-bench [--duration 10] [--connections 32] [--rounds 3]
//! ```
//!
//! 1. Stack overhead: the same JSON route served by bare axum, behind
//!    [`saas_core::http::HttpStack`] (request id and log context with JSON logging, metrics,
//!    problem+json, timeout, body limit, API version, rate limit with a high limit,
//!    idempotency), and behind the whole authenticated path (the stack, bearer-token
//!    verification, tenant resolution from the token, the permission check of
//!    `#[require_permission]`), on loopback,
//!    loaded in alternating rounds by the load generator in [`load`]. Prints requests/s,
//!    p50 and p99 and the server thread's CPU time per request for each round, then the
//!    medians and their ratios. `bare+token` is bare axum sent the authenticated request
//!    (its token ignored): what carrying the token costs without checking it.
//! 2. Logins ([`auth`]): argon2's time per check, login throughput against
//!    `cores ÷ that time`, and a login flood at ten times that rate beside authenticated
//!    reads: how much read throughput stays, and how the excess logins are refused.
//! 3. Memory: starts the release `saas serve` binary (next to this one), reads its resident
//!    set size idle, then after loading `/health/ready`.
//!
//! `--in-process N` measures instead the servers' own CPU per request without the
//! network ([`in_process`]), with the stack also layer by layer (its edge alone, then with
//! the rate limiter): steadier than the load test, for comparing two builds.

mod auth;
mod in_process;
#[cfg(feature = "kafka")]
mod kafka;
mod load;
mod rss;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Json, Router, ServiceExt as _, body::Body, response::Response, routing::get};
use clap::Parser;
use saas_core::http::{
    HttpService, HttpStack, RateLimitLayer,
    rate_limit::{MemoryRateLimiter, Quota},
};

/// Benchmarks the saas-core HTTP stack against bare axum, and `saas serve`'s memory.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Seconds of load per round and per server.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Alternating rounds (bare, stack, bare, stack, …); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Skip the memory measurement of `saas serve`.
    #[arg(long)]
    skip_rss: bool,
    /// Skip the login benchmarks.
    #[arg(long)]
    skip_logins: bool,
    /// Only the in-process measurement (see `in_process`): this many calls per batch.
    #[arg(long)]
    in_process: Option<u32>,
    /// With `--in-process`: only the server of this name (`bare`; `edge`: the stack's edge
    /// alone; `rate-limit`: the edge and the rate limiter; `stack`: the whole stack, with
    /// idempotency; `auth`; `auth-layer`: the permission checked by the layer, not the
    /// attribute; or `api-key`: the authenticated route called with an API key), for a
    /// profiler or an instruction counter such as `valgrind --tool=callgrind`.
    #[arg(long, requires = "in_process", value_parser = ["bare", "edge", "rate-limit", "stack", "auth", "auth-layer", "api-key"])]
    only: Option<String>,
    /// Run only the event benchmarks, against the broker at this URL
    /// (`kafka://127.0.0.1:9092`; build with `--features kafka`).
    #[cfg(feature = "kafka")]
    #[arg(long)]
    kafka: Option<String>,
}

pub(crate) async fn ping() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true, "service": "saas", "n": 42 }))
}

fn bare() -> Router {
    Router::new().route("/v1/ping", get(ping))
}

fn stacked() -> HttpService {
    let idempotency = saas_core::http::IdempotencyLayer::new(
        Arc::new(saas_core::cache::MemoryCache::new(10_000)),
        Duration::from_secs(3600),
    );
    rate_limited().idempotency(idempotency).apply(bare())
}

/// The stack with its edge alone: request id, log context, metrics, problem+json, timeout,
/// body limit and API version, no optional layer.
fn edge() -> HttpStack {
    HttpStack::new().routes(["/v1/ping"])
}

/// The edge and the rate limiter.
fn rate_limited() -> HttpStack {
    // A limit no benchmark client reaches: the limiter runs on every request but never denies.
    let limiter =
        RateLimitLayer::new(Arc::new(MemoryRateLimiter::new()), Quota::per_second(10_000_000).burst(10_000_000));
    edge().rate_limit(limiter)
}

/// Serves `app` (a router whose handlers are already routes, see `Router::with_state`, or
/// an [`HttpService`]) on a loopback port from a runtime with one worker thread, so server
/// and load generator each get one of the two cores.
fn serve<App>(app: App, thread_name: &'static str) -> anyhow::Result<SocketAddr>
where
    App: tower::Service<http::Request<Body>, Response = Response, Error = std::convert::Infallible>,
    App: Clone + Send + 'static,
    App::Future: Send,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.expect("serve");
        });
    });
    Ok(addr)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Log as the server does (JSON, info), into a sink: the cost of formatting is measured.
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_writer(saas_core::observe::request::RequestIdsWriter::json(std::io::sink))
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    #[cfg(feature = "kafka")]
    if let Some(url) = &args.kafka {
        return rt.block_on(kafka::run(url, args.rounds));
    }
    let auth_server = rt.block_on(auth::server())?;
    if let Some(calls) = args.in_process {
        let bearer =
            |credential: &str| -> anyhow::Result<http::HeaderValue> { Ok(format!("Bearer {credential}").parse()?) };
        let authenticated = |name, path, credential: &http::HeaderValue| in_process::Subject {
            name,
            server: in_process::Server::Stack(auth_server.router.clone()),
            path,
            authorization: Some(credential.clone()),
        };
        let anonymous = |name, server| in_process::Subject { name, server, path: "/v1/ping", authorization: None };
        let (token, api_key) = (bearer(&auth_server.token)?, bearer(&auth_server.api_key)?);
        let subjects = [
            anonymous("bare axum", in_process::Server::Bare(bare())),
            // The stack layer by layer: what each costs is the difference to the row above.
            anonymous("edge only", in_process::Server::Stack(edge().apply(bare()))),
            anonymous("+ rate lim", in_process::Server::Stack(rate_limited().apply(bare()))),
            anonymous("saas stack", in_process::Server::Stack(stacked())),
            authenticated("full auth", "/v1/ping", &token),
            authenticated("auth+layer", auth::LAYERED_PING, &token),
            authenticated("API key", "/v1/ping", &api_key),
        ];
        let names = ["bare", "edge", "rate-limit", "stack", "auth", "auth-layer", "api-key"];
        let chosen: Vec<_> = subjects
            .into_iter()
            .zip(names)
            .filter(|(_, name)| args.only.as_deref().is_none_or(|only| only == *name))
            .map(|(subject, _)| subject)
            .collect();
        return rt.block_on(in_process::run(&chosen, calls, args.rounds));
    }
    // As `axum::serve` has a router it is given: handlers turned into routes once.
    let bare_addr = serve(bare().with_state(()), "bare-server")?;
    let stack_addr = serve(stacked(), "stack-server")?;
    let auth_addr = serve(auth_server.router.clone(), "auth-server")?;
    let duration = Duration::from_secs(args.duration);

    println!("== stack overhead: GET /v1/ping, {} connections, {} s per round ==", args.connections, args.duration);
    let servers = [
        ("bare axum", bare_addr, "bare-server", load::Target::get("/v1/ping")),
        ("saas stack", stack_addr, "stack-server", load::Target::get("/v1/ping")),
        ("bare+token", bare_addr, "bare-server", auth::read(&auth_server.token)),
        ("full auth", auth_addr, "auth-server", auth::read(&auth_server.token)),
    ];
    rt.block_on(async {
        // Warm-up: connections, allocator, caches.
        for (_, addr, _, target) in &servers {
            load::run(*addr, target, args.connections, Duration::from_secs(1)).await?;
        }
        let mut rps = vec![vec![]; servers.len()];
        let mut p99 = vec![vec![]; servers.len()];
        let mut cpu = vec![vec![]; servers.len()];
        let mut busy_shares = vec![vec![]; servers.len()];
        for round in 1..=args.rounds {
            for (i, (name, addr, thread, target)) in servers.iter().enumerate() {
                // The load generator runs on this thread (a current-thread runtime).
                let cpu_before = (rss::thread_cpu(thread), rss::this_thread_cpu());
                let r = load::run(*addr, target, args.connections, duration).await?;
                let used = rss::thread_cpu(thread).saturating_sub(cpu_before.0);
                let generator = rss::this_thread_cpu().saturating_sub(cpu_before.1);
                let cpu_per_request = used.as_secs_f64() * 1e6 / r.requests.max(1) as f64;
                // Busy shares say which side held the throughput: the server's thread near
                // 1.0 means the server was the limit, as intended.
                let busy = |cpu: Duration| cpu.as_secs_f64() / r.elapsed.as_secs_f64();
                let server_busy = busy(used);
                println!(
                    "round {round} {name:<10} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  server CPU {cpu_per_request:>5.1} µs/req  busy: server {:.2}, generator {:.2}  errors {}",
                    r.rps(),
                    r.p50_ms(),
                    r.p99_ms(),
                    server_busy,
                    busy(generator),
                    r.errors
                );
                rps[i].push(r.rps());
                p99[i].push(r.p99_ms());
                cpu[i].push(cpu_per_request);
                busy_shares[i].push(server_busy);
            }
        }
        let rps: Vec<f64> = rps.into_iter().map(median).collect();
        let cpu: Vec<f64> = cpu.into_iter().map(median).collect();
        let busy_shares: Vec<f64> = busy_shares.into_iter().map(median).collect();
        for (i, (name, ..)) in servers.iter().enumerate() {
            println!(
                "median     {name:<10} {:>9.0} req/s  p99 {:>7.3} ms  server CPU {:>5.1} µs/req  server busy {:.2}",
                rps[i],
                median(p99[i].clone()),
                cpu[i],
                busy_shares[i]
            );
        }
        println!("throughput ratio stack/bare:     {:.3} (goal >= 0.90)", rps[1] / rps[0]);
        println!("throughput ratio full auth/bare: {:.3}", rps[3] / rps[0]);
        println!("throughput ratio full auth/bare+token: {:.3}", rps[3] / rps[2]);
        println!(
            "server CPU per request ratio bare/stack {:.3}, bare/full auth {:.3}, bare+token/full auth {:.3}",
            cpu[0] / cpu[1],
            cpu[0] / cpu[3],
            cpu[2] / cpu[3]
        );
        // A server that is not kept busy gets fewer requests than it could serve, and its
        // throughput understates it: then the CPU ratio is the truer comparison.
        let held_back: Vec<String> = servers
            .iter()
            .zip(&busy_shares)
            .filter(|(_, share)| **share < 0.9)
            .map(|((name, ..), share)| format!("{name} {share:.2}"))
            .collect();
        if !held_back.is_empty() {
            println!(
                "note: server threads busy less than 0.9 of the time: {} (the load generator held them back); \
                 where throughput and CPU ratios differ, the CPU ratio is what saturated servers would show",
                held_back.join(", ")
            );
        }
        anyhow::Ok(())
    })?;

    if !args.skip_logins {
        rt.block_on(auth::logins(auth_addr, &auth_server, duration, args.connections))?;
    }

    if !args.skip_rss {
        println!("\n== memory of `saas serve` ==");
        rt.block_on(rss::measure(duration, args.connections))?;
    }
    Ok(())
}
