//! Request metrics: every request is counted and timed by endpoint kind,
//! method and status. Labels stay low-cardinality: no repository names or
//! digests, only the kind of endpoint.

use std::time::Instant;

use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;

use crate::endpoint::Endpoint;

/// The kind of endpoint a path is, for labels.
pub fn endpoint_label(path: &str) -> &'static str {
    if let Some(rest) = path.strip_prefix("/v2/").or_else(|| (path == "/v2").then_some("")) {
        return match Endpoint::parse(rest) {
            Ok(Endpoint::Base) => "v2_base",
            Ok(Endpoint::Catalog) => "v2_catalog",
            Ok(Endpoint::Tags(_)) => "v2_tags",
            Ok(Endpoint::Manifest(..) | Endpoint::InvalidReference(..)) => "v2_manifest",
            Ok(Endpoint::Blob(..)) => "v2_blob",
            Ok(Endpoint::UploadStart(_)) => "v2_upload_start",
            Ok(Endpoint::Upload(..)) => "v2_upload",
            Ok(Endpoint::Referrers(..)) => "v2_referrers",
            Err(_) => "v2_invalid",
        };
    }
    match path {
        "/health" | "/health/ready" => "health",
        "/metrics" => "metrics",
        p if p.starts_with("/api/v1/") => "admin",
        _ => "other",
    }
}

/// The method as a label. Clients choose the method, so one outside the
/// ones HTTP defines is `other`: a client making up methods must not make
/// up series.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

fn content_length(headers: &axum::http::HeaderMap) -> u64 {
    headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Middleware: counts, times and sizes every request.
pub async fn track(req: Request, next: Next) -> Response {
    let endpoint = endpoint_label(req.uri().path());
    let method = method_label(req.method());
    let is_head = req.method() == axum::http::Method::HEAD;
    let received = content_length(req.headers());
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("berth_http_requests_total", "endpoint" => endpoint, "method" => method, "status" => status).increment(1);
    metrics::histogram!("berth_http_request_duration_seconds", "endpoint" => endpoint, "method" => method).record(started.elapsed().as_secs_f64());
    metrics::counter!("berth_http_received_bytes_total", "endpoint" => endpoint).increment(received);
    if !is_head && method_sends_body(resp.status()) {
        metrics::counter!("berth_http_sent_bytes_total", "endpoint" => endpoint).increment(content_length(resp.headers()));
    }
    resp
}

fn method_sends_body(status: axum::http::StatusCode) -> bool {
    status != axum::http::StatusCode::NO_CONTENT && status != axum::http::StatusCode::NOT_MODIFIED
}
