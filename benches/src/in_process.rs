//! The servers' own CPU per request, without the network: each router is called in-process
//! (`tower::ServiceExt::oneshot`) with the same request as under load, in alternating
//! batches, and the mean time per call of each batch is kept. No sockets, no HTTP parsing,
//! no scheduler: what remains is what the layers and the route cost, steady enough to
//! compare two builds whose load-test figures the machine's noise would hide.

use std::time::{Duration, Instant};

use axum::{Router, body::Body, response::Response};
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use saas_core::http::HttpService;
use tower::{Service, ServiceExt};

/// A server and the request each call sends to it.
pub(crate) struct Subject {
    pub(crate) name: &'static str,
    pub(crate) server: Server,
    /// The path called.
    pub(crate) path: &'static str,
    /// `Authorization` value, if any.
    pub(crate) authorization: Option<HeaderValue>,
}

/// Calls each subject `calls` times per batch, `batches` times in turn, and prints the
/// median time per call of each and its ratio to the first.
pub(crate) async fn run(subjects: &[Subject], calls: u32, batches: usize) -> anyhow::Result<()> {
    println!("\n== in-process: each server's route called {calls} times per batch, {batches} batches each ==");
    let mut per_call = vec![Vec::with_capacity(batches); subjects.len()];
    for subject in subjects {
        // Warm-up: caches filled, allocator settled.
        batch(subject, calls / 10 + 1).await?;
    }
    for _ in 0..batches {
        for (i, subject) in subjects.iter().enumerate() {
            per_call[i].push(batch(subject, calls).await?);
        }
    }
    let medians: Vec<f64> =
        per_call.into_iter().map(|v| crate::stats::median(v.iter().map(Duration::as_secs_f64).collect())).collect();
    for (subject, median) in subjects.iter().zip(&medians) {
        println!(
            "{:<10} {:>7.0} ns/call  {:>+6.0} ns, ratio {:.3} of {}",
            subject.name,
            median * 1e9,
            (median - medians[0]) * 1e9,
            medians[0] / median,
            subjects[0].name
        );
    }
    Ok(())
}

/// What is called: bare axum, or a router behind the stack.
pub(crate) enum Server {
    Bare(Router),
    Stack(HttpService),
    /// The identity layers without the stack's edge.
    Identity(crate::auth::IdentityService),
}

/// The mean time of one call over `calls` calls.
async fn batch(subject: &Subject, calls: u32) -> anyhow::Result<Duration> {
    match &subject.server {
        // As `axum::serve` has it: handlers turned into routes (and layers applied) once,
        // not on every call.
        Server::Bare(router) => call_each(subject, router.clone().with_state(()), calls).await,
        Server::Stack(service) => call_each(subject, service.clone(), calls).await,
        Server::Identity(service) => call_each(subject, service.clone(), calls).await,
    }
}

async fn call_each<App>(subject: &Subject, app: App, calls: u32) -> anyhow::Result<Duration>
where
    App: Service<Request<Body>, Response = Response, Error = std::convert::Infallible> + Clone,
{
    let start = Instant::now();
    for _ in 0..calls {
        let mut request = Request::get(subject.path).header("host", "bench").body(Body::empty())?;
        if let Some(value) = &subject.authorization {
            request.headers_mut().insert(http::header::AUTHORIZATION, value.clone());
        }
        let response = app.clone().oneshot(request).await?;
        anyhow::ensure!(response.status().is_success(), "{}: {}", subject.name, response.status());
        response.into_body().collect().await?;
    }
    Ok(start.elapsed() / calls)
}
