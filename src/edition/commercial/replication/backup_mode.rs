//! Backup mode (review items 3 and 8): a backup POP answers every write, over the API and the
//! local CLI, with an error naming its primary. Only the signed apply route writes on a backup.
//!
//! The role comes from the replication file only. The API guard is installed only on a backup
//! (a primary's and a community node's requests never pass through it).

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Role;

/// The refusal a backup gives every write, naming the POP(s) that are its primary.
pub fn refusal() -> Option<String> {
    let rt = super::runtime().filter(|rt| rt.config.role == Role::Backup)?;
    let primaries: Vec<&str> = rt.config.sources.iter().map(|p| p.id.as_str()).collect();
    Some(format!(
        "this POP ({}) is a replication backup and accepts no writes; make changes on the primary ({})",
        rt.config.pop_id,
        primaries.join(", ")
    ))
}

/// Refuses any API request that could change state: everything but GET/HEAD, except the
/// replication apply route itself.
pub async fn guard(req: Request, next: Next) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if read || req.uri().path() == super::apply::PATH {
        return next.run(req).await;
    }
    match refusal() {
        Some(message) => crate::api::ApiError::forbidden("backup_pop", message).into_response(),
        None => next.run(req).await,
    }
}
