//! The last word on every response: security headers on everything, a JSON body on every
//! error that lacks one (axum's own 405, a body-limit 413, an extractor's rejection), the node's
//! request counters, and the request log line.
//!
//! A hand-written tower layer rather than `middleware::from_fn`: this runs on every request, and
//! `from_fn` boxes a future of about a kilobyte and clones the inner service each time.
//! Must never: log a URI (ids, search text) or change a response that already carries JSON.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::error;

#[derive(Clone, Copy)]
pub struct FinishLayer;

impl<S> tower::Layer<S> for FinishLayer {
    type Service = Finish<S>;

    fn layer(&self, inner: S) -> Finish<S> {
        Finish { inner }
    }
}

#[derive(Clone)]
pub struct Finish<S> {
    inner: S,
}

/// What the log line needs of the request. The route pattern, not the URI: it names the route
/// without ids, and a clone of the URI would pin hyper's read buffer (the URI shares its bytes)
/// for as long as the handler runs.
struct Seen {
    method: Method,
    route: Option<MatchedPath>,
    /// Only when the request line is logged: a clock read per request is measurable.
    started: Option<Instant>,
}

impl<S> tower::Service<Request> for Finish<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FinishFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let seen = Seen {
            method: req.method().clone(),
            route: req.extensions().get::<MatchedPath>().cloned(),
            started: tracing::enabled!(tracing::Level::DEBUG).then(Instant::now),
        };
        FinishFuture { inner: self.inner.call(req), seen: Some(seen) }
    }
}

pin_project_lite::pin_project! {
    pub struct FinishFuture<F> {
        #[pin]
        inner: F,
        seen: Option<Seen>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for FinishFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(resp) = ready!(this.inner.poll(cx));
        Poll::Ready(Ok(finish(resp, this.seen.take())))
    }
}

fn finish(mut resp: Response, seen: Option<Seen>) -> Response {
    let status = resp.status();
    // Node telemetry: req_1h / err_1h (every 4xx and 5xx is an error).
    crate::node::metrics().record_response(status.as_u16());
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // SCIM (RFC 7644) answers carry their own JSON media type.
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("application/scim+json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let message = status.canonical_reason().unwrap_or("error");
        let body = json!({"error": error::code_for(status), "message": message}).to_string();
        let headers = std::mem::take(resp.headers_mut());
        resp = Response::new(Body::from(body));
        *resp.status_mut() = status;
        for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
            if let Some(v) = headers.get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Some(Seen { method, route, started }) = seen {
        let route = route.as_ref().map_or("(no route)", MatchedPath::as_str);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(%method, route, status = status.as_u16(), "request failed");
        } else if let Some(started) = started {
            tracing::debug!(%method, route, status = status.as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
        }
    }
    resp
}
