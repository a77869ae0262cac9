//! The stack-overhead load test: the servers loaded in turn, in short slices, round after
//! round.
//!
//! On a shared virtual machine the throughput of one server moves by a fifth or more from
//! one second to the next (other tenants of the host, the host's own work). Rounds of
//! seconds per server compared one server's good second with another's bad one. Here each
//! round is cut into slices of a fraction of a second, the servers take turns slice by
//! slice (the first of each turn rotating), and each turn's throughputs are compared with
//! each other: noise slower than a turn affects both sides of a ratio alike and cancels.
//! The median of these paired ratios comes with a distribution-free 95 % confidence
//! interval, which says whether a run can tell a ratio from the goal at all.

use std::{net::SocketAddr, time::Duration};

use crate::{
    load, rss,
    stats::{Interval, median},
};

/// A server under load and the request it is sent.
pub(crate) struct Server {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    /// Its runtime's thread name, whose CPU time is read.
    pub(crate) thread: &'static str,
    pub(crate) target: load::Target,
}

impl Server {
    /// `name`, served at `addr` by the runtime whose threads are named `thread`, sent `target`.
    pub(crate) fn new(name: &'static str, addr: SocketAddr, thread: &'static str, target: load::Target) -> Self {
        Self { name, addr, thread, target }
    }
}

/// How the load is given.
pub(crate) struct Plan {
    pub(crate) connections: usize,
    pub(crate) rounds: usize,
    /// Load per server and round, given in slices.
    pub(crate) duration: Duration,
    pub(crate) slice: Duration,
}

/// A ratio of two servers' throughputs that the run reports, by their indices in `servers`.
pub(crate) struct Ratio {
    pub(crate) of: usize,
    pub(crate) to: usize,
    pub(crate) goal: Option<f64>,
}

/// Loads `servers` as described in the [module docs](self) and prints, per round and
/// server, the throughput, latency and CPU per request; then the medians over rounds and
/// the paired slice ratios of `ratios`.
pub(crate) async fn run(servers: &[Server], plan: &Plan, ratios: &[Ratio]) -> anyhow::Result<()> {
    let slices = (plan.duration.as_secs_f64() / plan.slice.as_secs_f64()).round().max(1.0) as usize;
    println!(
        "== stack overhead: GET /v1/ping, {} connections, {} rounds of {} s per server in {slices} slices of {} ms, servers in turn ==",
        plan.connections,
        plan.rounds,
        plan.duration.as_secs_f64(),
        plan.slice.as_millis()
    );
    let mut connections = Vec::with_capacity(servers.len());
    for server in servers {
        connections.push(load::Connections::open(server.addr, plan.connections).await?);
    }
    // Warm-up: allocator, caches.
    for (server, connections) in servers.iter().zip(&mut connections) {
        connections.run(&server.target, Duration::from_secs(1)).await?;
    }
    let mut per_round: Vec<Vec<RoundFigures>> = (0..servers.len()).map(|_| Vec::new()).collect();
    // Each server's throughput in each turn, turns of all rounds in order.
    let mut turns: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    for round in 1..=plan.rounds {
        let mut totals = servers.iter().map(|_| load::Report::empty()).collect::<anyhow::Result<Vec<_>>>()?;
        let mut cpu = vec![(Duration::ZERO, Duration::ZERO); servers.len()];
        for turn in 0..slices {
            for k in 0..servers.len() {
                // The first server of a turn rotates: no server always follows the same one.
                let i = (k + turn) % servers.len();
                let server = &servers[i];
                // The load generator runs on this thread (a current-thread runtime).
                let before = (rss::thread_cpu(server.thread), rss::this_thread_cpu());
                let report = connections[i].run(&server.target, plan.slice).await?;
                cpu[i].0 += rss::thread_cpu(server.thread).saturating_sub(before.0);
                cpu[i].1 += rss::this_thread_cpu().saturating_sub(before.1);
                turns[i].push(report.rps());
                totals[i].absorb(report)?;
            }
        }
        for (i, (server, total)) in servers.iter().zip(totals).enumerate() {
            let figures = RoundFigures::of(&total, cpu[i]);
            println!(
                "round {round} {:<10} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  server CPU {:>5.1} µs/req  busy: server {:.2}, generator {:.2}  errors {}",
                server.name,
                figures.rps,
                total.p50_ms(),
                figures.p99_ms,
                figures.cpu_per_request_us,
                figures.server_busy,
                figures.generator_busy,
                total.errors
            );
            per_round[i].push(figures);
        }
    }
    let medians: Vec<RoundFigures> = per_round.iter().map(|rounds| RoundFigures::median(rounds)).collect();
    for (server, m) in servers.iter().zip(&medians) {
        println!(
            "median     {:<10} {:>9.0} req/s  p99 {:>7.3} ms  server CPU {:>5.1} µs/req  server busy {:.2}",
            server.name, m.rps, m.p99_ms, m.cpu_per_request_us, m.server_busy
        );
    }
    println!(
        "paired ratios: each turn's throughputs compared, median over the turns with its 95 % confidence interval"
    );
    for ratio in ratios {
        let paired: Vec<f64> = turns[ratio.of].iter().zip(&turns[ratio.to]).map(|(of, to)| of / to).collect();
        let count = paired.len();
        let interval = Interval::of_median(paired);
        let (of, to) = (servers[ratio.of].name, servers[ratio.to].name);
        let medians_ratio = medians[ratio.of].rps / medians[ratio.to].rps;
        let cpu_ratio = medians[ratio.to].cpu_per_request_us / medians[ratio.of].cpu_per_request_us;
        let verdict = ratio.goal.map_or(String::new(), |goal| format!(", {}", interval.verdict(goal)));
        println!(
            "throughput ratio {of}/{to}: {interval} over {count} turns{verdict}; ratio of round medians {medians_ratio:.3}; server CPU per request {to}/{of} {cpu_ratio:.3}"
        );
    }
    // A server that is not kept busy gets fewer requests than it could serve, and its
    // throughput understates it: then the CPU ratio is the truer comparison.
    let held_back: Vec<String> = servers
        .iter()
        .zip(&medians)
        .filter(|(_, m)| m.server_busy < 0.9)
        .map(|(server, m)| format!("{} {:.2}", server.name, m.server_busy))
        .collect();
    if !held_back.is_empty() {
        println!(
            "note: server threads busy less than 0.9 of the time: {} (the load generator held them back); \
             where throughput and CPU ratios differ, the CPU ratio is what saturated servers would show",
            held_back.join(", ")
        );
    }
    Ok(())
}

/// One server's figures over one round.
struct RoundFigures {
    rps: f64,
    p99_ms: f64,
    cpu_per_request_us: f64,
    server_busy: f64,
    generator_busy: f64,
}

impl RoundFigures {
    /// From the round's merged report and the CPU time of the server's thread and of the
    /// generator's.
    fn of(total: &load::Report, (server, generator): (Duration, Duration)) -> Self {
        // Busy shares say which side held the throughput: the server's thread near 1.0
        // means the server was the limit, as intended.
        let busy = |cpu: Duration| cpu.as_secs_f64() / total.elapsed.as_secs_f64();
        Self {
            rps: total.rps(),
            p99_ms: total.p99_ms(),
            cpu_per_request_us: server.as_secs_f64() * 1e6 / total.requests.max(1) as f64,
            server_busy: busy(server),
            generator_busy: busy(generator),
        }
    }

    /// Each figure's median over `rounds`.
    fn median(rounds: &[Self]) -> Self {
        let of = |figure: fn(&Self) -> f64| median(rounds.iter().map(figure).collect());
        Self {
            rps: of(|r| r.rps),
            p99_ms: of(|r| r.p99_ms),
            cpu_per_request_us: of(|r| r.cpu_per_request_us),
            server_busy: of(|r| r.server_busy),
            generator_busy: of(|r| r.generator_busy),
        }
    }
}
