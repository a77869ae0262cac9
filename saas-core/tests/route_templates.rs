//! A test binary of its own: the warning checked here is an event of a callsite that other
//! tests reach too, and `tracing` keeps each callsite's interest and the highest enabled
//! level process-wide. Run beside tests of other threads that set and drop subscribers of
//! their own, the event could be filtered out before this test's subscriber saw it (the
//! `http_stack` tests alone failed this way every time).

#[path = "it/lines.rs"]
mod lines;

use axum::{Router, routing::get};
use lines::Lines;
use saas_core::http::HttpStack;

#[test]
fn a_stack_without_route_templates_says_its_metrics_are_unlabelled() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).finish();
    tracing::subscriber::with_default(subscriber, || {
        let routes = || Router::new().route("/v1/x", get(|| async { "x" }));
        HttpStack::new().routes(["/v1/x"]).apply(routes());
        assert_eq!(lines.text(), "", "no warning with templates");
        HttpStack::new().apply(routes());
    });
    let text = lines.text();
    assert!(text.contains("WARN") && text.contains("HttpStack::routes"), "{text}");
}
