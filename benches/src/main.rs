//! `saas-bench`: what the saas-core layer stack costs, and how much memory `saas serve` uses.
//!
//! ```text
//! cargo build --release -p saas-server -p saas-bench
//! target/release/saas-bench [--duration 10] [--connections 32] [--rounds 3]
//! ```
//!
//! 1. Stack overhead: the same JSON route served by bare axum and behind
//!    [`saas_core::http::HttpStack`] (request id, trace span with JSON logging, metrics,
//!    problem+json, timeout, body limit, API version, rate limit with a high limit,
//!    idempotency) on loopback, loaded in alternating rounds by the load generator in
//!    [`load`]. Prints requests/s, p50 and p99 and the server thread's CPU time per request
//!    for each round, then the medians and their ratios.
//! 2. Memory: starts the release `saas serve` binary (next to this one), reads its resident
//!    set size idle, then after loading `/health/ready`.

mod load;
mod rss;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Json, Router, routing::get};
use clap::Parser;
use saas_core::http::{
    HttpStack, RateLimitLayer,
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
}

async fn ping() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true, "service": "saas", "n": 42 }))
}

fn bare() -> Router {
    Router::new().route("/v1/ping", get(ping))
}

fn stacked() -> Router {
    // A limit no benchmark client reaches: the limiter runs on every request but never denies.
    let limiter =
        RateLimitLayer::new(Arc::new(MemoryRateLimiter::new()), Quota::per_second(10_000_000).burst(10_000_000));
    let idempotency = saas_core::http::IdempotencyLayer::new(
        Arc::new(saas_core::cache::MemoryCache::new(10_000)),
        Duration::from_secs(3600),
    );
    HttpStack::new().rate_limit(limiter).idempotency(idempotency).apply(bare())
}

/// Serves `router` on a loopback port from a runtime with one worker thread, so server and
/// load generator each get one of the two cores.
fn serve(router: Router, thread_name: &'static str) -> anyhow::Result<SocketAddr> {
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
            axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await.expect("serve");
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
        .with_writer(std::io::sink)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .init();
    let bare_addr = serve(bare(), "bare-server")?;
    let stack_addr = serve(stacked(), "stack-server")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let duration = Duration::from_secs(args.duration);

    println!("== stack overhead: GET /v1/ping, {} connections, {} s per round ==", args.connections, args.duration);
    rt.block_on(async {
        // Warm-up: connections, allocator, caches.
        load::run(bare_addr, "/v1/ping", args.connections, Duration::from_secs(1)).await?;
        load::run(stack_addr, "/v1/ping", args.connections, Duration::from_secs(1)).await?;
        let (mut bare_rps, mut stack_rps, mut bare_p99, mut stack_p99) = (vec![], vec![], vec![], vec![]);
        let (mut bare_cpu, mut stack_cpu) = (vec![], vec![]);
        for round in 1..=args.rounds {
            for (name, addr, thread) in [("bare axum", bare_addr, "bare-server"), ("saas stack", stack_addr, "stack-server")] {
                let cpu_before = rss::thread_cpu(thread);
                let r = load::run(addr, "/v1/ping", args.connections, duration).await?;
                let cpu = rss::thread_cpu(thread).saturating_sub(cpu_before);
                let cpu_per_request = cpu.as_secs_f64() * 1e6 / r.requests.max(1) as f64;
                println!(
                    "round {round} {name:<10} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  server CPU {cpu_per_request:>5.1} µs/req  errors {}",
                    r.rps(),
                    r.p50_ms(),
                    r.p99_ms(),
                    r.errors
                );
                if name == "bare axum" {
                    bare_rps.push(r.rps());
                    bare_p99.push(r.p99_ms());
                    bare_cpu.push(cpu_per_request);
                } else {
                    stack_rps.push(r.rps());
                    stack_p99.push(r.p99_ms());
                    stack_cpu.push(cpu_per_request);
                }
            }
        }
        let (b, s) = (median(bare_rps), median(stack_rps));
        println!("median     bare axum  {b:>9.0} req/s  p99 {:>7.3} ms", median(bare_p99));
        println!("median     saas stack {s:>9.0} req/s  p99 {:>7.3} ms", median(stack_p99));
        println!("throughput ratio stack/bare: {:.3} (goal >= 0.90)", s / b);
        let (bc, sc) = (median(bare_cpu), median(stack_cpu));
        println!("server CPU per request: bare {bc:.1} µs, stack {sc:.1} µs, ratio bare/stack {:.3}", bc / sc);
        anyhow::Ok(())
    })?;

    if !args.skip_rss {
        println!("\n== memory of `saas serve` ==");
        rt.block_on(rss::measure(duration, args.connections))?;
    }
    Ok(())
}
