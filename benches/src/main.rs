//! `saas-bench`: what the saas-core layer stack and the identity layers cost, what logins
//! achieve against argon2's cost, and how much memory `saas serve` uses.
//!
//! ```text
//! cargo build --release -p saas-server -p saas-bench
//! target/release/saas-bench [--duration 10] [--connections 32] [--rounds 3] [--slice-ms 250]
//! ```
//!
//! 1. Stack overhead: the same JSON route served by bare axum, behind
//!    [`saas_core::http::HttpStack`] (request id and log context with JSON logging, metrics,
//!    problem+json, timeout, body limit, API version, rate limit with a high limit,
//!    idempotency), and behind the whole authenticated path (the stack, bearer-token
//!    verification, tenant resolution from the token, the permission check of
//!    `#[require_permission]`), and behind the identity layers alone (`identity`: rate
//!    limit, token verification, tenant resolution and the permission check, the "full
//!    stack" as the identity issue names it, without the stack's edge), on loopback,
//!    loaded by the load generator in [`load`], in turns of short slices ([`overhead`]).
//!    Prints requests/s, p50 and p99 and the server thread's CPU time per request for each
//!    round, the medians, and the ratios of each turn's throughputs (median and 95 %
//!    confidence interval, with the verdict on the goal). `bare+token` is bare axum sent the
//!    authenticated request (its token ignored): what carrying the token costs without
//!    checking it.
//! 2. Logins ([`auth`]): argon2's time per check, login throughput against
//!    `cores ÷ that time`, and a login flood at ten times that rate beside authenticated
//!    reads (reads alone and beside the flood taking turns, compared turn by turn): how
//!    much read throughput stays, and how the excess logins are refused.
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
mod overhead;
mod rss;
mod stats;

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
    /// Rounds; medians are reported. In a round the servers take turns, a slice each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Milliseconds of load per slice: the servers take turns slice by slice, and each
    /// turn's throughputs are compared (see `overhead`).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..))]
    slice_ms: u64,
    /// Skip the memory measurement of `saas serve`.
    #[arg(long)]
    skip_rss: bool,
    /// Skip the login benchmarks.
    #[arg(long)]
    skip_logins: bool,
    /// Skip the overhead test (the servers compared under load), for the logins and memory alone.
    #[arg(long)]
    skip_overhead: bool,
    /// `auth.queued_hashes` of the identity server: password hashes that may wait for a
    /// hashing thread (default: one a thread; 0: none). The login throughput test runs one
    /// client per place.
    #[arg(long)]
    queued_hashes: Option<usize>,
    /// Only the in-process measurement (see `in_process`): this many calls per batch.
    #[arg(long)]
    in_process: Option<u32>,
    /// With `--in-process`: only the server of this name (`bare`; `edge`: the stack's edge
    /// alone; `rate-limit`: the edge and the rate limiter; `stack`: the whole stack, with
    /// idempotency; `auth`; `auth-layer`: the permission checked by the layer, not the
    /// attribute; `api-key`: the authenticated route called with an API key; or `identity`:
    /// the identity layers without the stack's edge), for a
    /// profiler or an instruction counter such as `valgrind --tool=callgrind`.
    #[arg(long, requires = "in_process", value_parser = ["bare", "edge", "rate-limit", "stack", "auth", "auth-layer", "api-key", "identity"])]
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

/// The CPU every server's threads run on, and the one the load generator runs on, when the
/// machine has two or more.
///
/// Left to the scheduler, each server's thread stays on whichever CPU it first ran on, and
/// on a virtual machine one CPU can be steadily faster than the other (what shares its
/// physical core): a comparison between two servers then measured the two CPUs as much as
/// the servers, differently from one run to the next.
#[derive(Clone, Copy)]
struct Cpus {
    servers: core_affinity::CoreId,
    generator: core_affinity::CoreId,
}

impl Cpus {
    fn of_this_machine() -> Option<Self> {
        match core_affinity::get_core_ids()?.as_slice() {
            [servers, generator, ..] => Some(Self { servers: *servers, generator: *generator }),
            _ => None,
        }
    }
}

/// Serves `app` (a router whose handlers are already routes, see `Router::with_state`, or
/// an [`HttpService`]) on a loopback port from a runtime with one worker thread, on `cpu`
/// when given, so server and load generator each get one of the two cores.
fn serve<App>(app: App, thread_name: &'static str, cpu: Option<core_affinity::CoreId>) -> anyhow::Result<SocketAddr>
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
            .on_thread_start(move || {
                if let Some(cpu) = cpu {
                    core_affinity::set_for_current(cpu);
                }
            })
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
    let auth_server = rt.block_on(auth::server(args.queued_hashes))?;
    if let Some(calls) = args.in_process {
        let bearer =
            |credential: &str| -> anyhow::Result<http::HeaderValue> { Ok(format!("Bearer {credential}").parse()?) };
        let authenticated = |name, server, path, credential: &http::HeaderValue| in_process::Subject {
            name,
            server,
            path,
            authorization: Some(credential.clone()),
        };
        let full = || in_process::Server::Stack(auth_server.router.clone());
        let anonymous = |name, server| in_process::Subject { name, server, path: "/v1/ping", authorization: None };
        let (token, api_key) = (bearer(&auth_server.token)?, bearer(&auth_server.api_key)?);
        let subjects = [
            anonymous("bare axum", in_process::Server::Bare(bare())),
            // The stack layer by layer: what each costs is the difference to the row above.
            anonymous("edge only", in_process::Server::Stack(edge().apply(bare()))),
            anonymous("+ rate lim", in_process::Server::Stack(rate_limited().apply(bare()))),
            anonymous("saas stack", in_process::Server::Stack(stacked())),
            authenticated("full auth", full(), "/v1/ping", &token),
            authenticated("auth+layer", full(), auth::LAYERED_PING, &token),
            authenticated("API key", full(), "/v1/ping", &api_key),
            authenticated("identity", in_process::Server::Identity(auth_server.identity.clone()), "/v1/ping", &token),
        ];
        let names = ["bare", "edge", "rate-limit", "stack", "auth", "auth-layer", "api-key", "identity"];
        let chosen: Vec<_> = subjects
            .into_iter()
            .zip(names)
            .filter(|(_, name)| args.only.as_deref().is_none_or(|only| only == *name))
            .map(|(subject, _)| subject)
            .collect();
        return rt.block_on(in_process::run(&chosen, calls, args.rounds));
    }
    // As `axum::serve` has a router it is given: handlers turned into routes once.
    let cpus = Cpus::of_this_machine();
    let server_cpu = cpus.map(|cpus| cpus.servers);
    let bare_addr = serve(bare().with_state(()), "bare-server", server_cpu)?;
    let stack_addr = serve(stacked(), "stack-server", server_cpu)?;
    let auth_addr = serve(auth_server.router.clone(), "auth-server", server_cpu)?;
    let identity_addr = serve(auth_server.identity.clone(), "identity-server", server_cpu)?;
    let duration = Duration::from_secs(args.duration);

    let read = || auth::read(&auth_server.token);
    let servers = [
        overhead::Server::new("bare axum", bare_addr, "bare-server", load::Target::get("/v1/ping")),
        overhead::Server::new("saas stack", stack_addr, "stack-server", load::Target::get("/v1/ping")),
        overhead::Server::new("bare+token", bare_addr, "bare-server", read()),
        overhead::Server::new("full auth", auth_addr, "auth-server", read()),
        overhead::Server::new("identity", identity_addr, "identity-server", read()),
    ];
    let plan = overhead::Plan {
        connections: args.connections,
        rounds: args.rounds,
        duration,
        slice: Duration::from_millis(args.slice_ms),
    };
    let ratios = [
        overhead::Ratio { of: 1, to: 0, goal: Some(0.90) },
        overhead::Ratio { of: 3, to: 0, goal: Some(0.90) },
        overhead::Ratio { of: 3, to: 2, goal: None },
        overhead::Ratio { of: 4, to: 0, goal: Some(0.90) },
    ];
    // The generator gets a thread of its own, kept on its CPU; this thread stays unpinned,
    // so that the logins below (their generator and hashing threads) and the `saas serve`
    // of the memory measurement may use every core.
    std::thread::scope(|scope| {
        if args.skip_overhead {
            return Ok(());
        }
        scope
            .spawn(|| {
                match cpus {
                    Some(cpus) if core_affinity::set_for_current(cpus.generator) => {
                        println!("servers on CPU {}, load generator on CPU {}", cpus.servers.id, cpus.generator.id)
                    }
                    _ => println!("servers and load generator on whichever CPUs the scheduler gives them"),
                }
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(overhead::run(&servers, &plan, &ratios))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;

    if !args.skip_logins {
        // As much load in all as the overhead test gives each server.
        rt.block_on(auth::logins(auth_addr, &auth_server, duration * args.rounds as u32, args.connections))?;
    }

    if !args.skip_rss {
        println!("\n== memory of `saas serve` ==");
        rt.block_on(rss::measure(duration, args.connections))?;
    }
    Ok(())
}
