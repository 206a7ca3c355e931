//! The `Caller` extractor: turns `Authorization: Bearer cvt_…` into a [`Principal`].
//!
//! Every failure looks the same to the client (401, same body) and is audited at node level
//! with a reason code that never contains token material.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::audit::{Action, Actor, AuditEvent, Outcome, ip_text};
use crate::auth::TokenHash;
use crate::vault::{AuthFailure, Principal};

pub struct Caller {
    pub principal: Principal,
    /// The hash of the token presented, so a gated write can re-check it inside its transaction.
    pub token: TokenHash,
    /// The peer's IP address, for audit rows.
    pub peer: Option<IpAddr>,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::Agent(self.principal.agent.id)
    }

    pub fn event(&self, action: Action, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(self.actor(), action, outcome).peer(self.peer)
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.principal.agent.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("not_admin", "this needs an admin agent"))
        }
    }
}

fn peer_of(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<super::serve::Peer>().map(|p| p.addr.ip())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = peer_of(parts);
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")).map(str::trim));
        // One clock read for the token's expiry, the vault's last use and telemetry.
        let now_ms = crate::store::now_ms();
        let reason = match presented {
            None => "missing",
            Some(None) => "malformed",
            Some(Some(token)) => match TokenHash::of_presented(token) {
                Err(_) => "malformed",
                Ok(hash) => match state.node.authenticate_at(&hash, now_ms) {
                    Ok(principal) => {
                        // Node telemetry: this agent counts as an active session for 5 minutes.
                        crate::node::metrics().record_agent(
                            principal.vault.id().as_str(),
                            principal.agent.id.0,
                            now_ms.div_euclid(1000).try_into().unwrap_or(0),
                        );
                        return Ok(Caller { principal, token: hash, peer });
                    }
                    Err(AuthFailure::Unavailable(vault)) => return Err(ApiError::VaultUnavailable(vault.to_string())),
                    Err(AuthFailure::Unknown) => "unknown",
                },
            },
        };
        if !state.auth_throttle.allow_failure(peer) {
            return Err(ApiError::TooManyRequests);
        }
        let event =
            AuditEvent::new(Actor::Anonymous, Action::Authenticate, Outcome::Unauthorized).peer(peer).detail(reason);
        // The 401 goes out whether or not the audit row made it; a failure here is the log's problem.
        if let Err(e) = state.node.audit(event).await {
            crate::edition::alert(
                "auth_system_error",
                "cannot audit a failed authentication",
                &[("error", e.to_string())],
            );
        }
        Err(ApiError::Unauthorized)
    }
}

/// The peer's IP address for requests that carry no token (setup); never fails.
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The address as audit rows record it.
    pub fn text(&self) -> String {
        self.0.map(ip_text).unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(peer_of(parts)))
    }
}
