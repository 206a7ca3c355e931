//! The `Caller` extractor: turns `Authorization: Bearer cvt_…` into a [`Principal`].
//!
//! Every failure looks the same to the client (401, same body) and is audited at node level
//! with a reason code that never contains token material.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::audit::{Action, Actor, AuditEvent, Outcome};
use crate::auth::TokenHash;
use crate::vault::{AuthFailure, Principal};

pub struct Caller {
    pub principal: Principal,
    /// The hash of the token presented, so a gated write can re-check it inside its transaction.
    pub token: TokenHash,
    /// The peer's IP address, for audit rows.
    pub client: String,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::Agent(self.principal.agent.id)
    }

    pub fn event(&self, action: Action, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(self.actor(), action, outcome).client(self.client.clone())
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.principal.agent.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("not_admin", "this needs an admin agent"))
        }
    }
}

/// `ip` as audit rows record it (`Display`'s text). IPv4, every request's case on a node, is
/// written by hand: the formatting machinery took about 1 % of a read's CPU in profiles.
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

fn peer_of(parts: &Parts) -> Option<std::net::IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = peer_of(parts);
        let client = peer.map(ip_text).unwrap_or_default();
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")).map(str::trim));
        let reason = match presented {
            None => "missing",
            Some(None) => "malformed",
            Some(Some(token)) => match TokenHash::of_presented(token) {
                Err(_) => "malformed",
                Ok(hash) => match state.node.authenticate(&hash) {
                    Ok(principal) => {
                        // Node telemetry: this agent counts as an active session for 5 minutes.
                        crate::node::metrics().record_agent(principal.vault.id().as_str(), principal.agent.id.0);
                        return Ok(Caller { principal, token: hash, client });
                    }
                    Err(AuthFailure::Unavailable(vault)) => return Err(ApiError::VaultUnavailable(vault.to_string())),
                    Err(AuthFailure::Unknown) => "unknown",
                },
            },
        };
        if !state.auth_throttle.allow_failure(peer) {
            return Err(ApiError::TooManyRequests);
        }
        let event = AuditEvent::new(Actor::Anonymous, Action::Authenticate, Outcome::Unauthorized)
            .client(client)
            .detail(reason);
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
pub struct ClientIp(pub Option<std::net::IpAddr>);

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

#[cfg(test)]
mod tests {
    use super::ip_text;

    #[test]
    fn ip_text_is_displays_text() {
        let samples = ["0.0.0.0", "127.0.0.1", "10.9.99.100", "255.255.255.255", "192.168.1.20", "::1", "fe80::1:2"];
        for text in samples {
            let ip: std::net::IpAddr = text.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for n in 0..=255u8 {
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(n, 7, n, 250));
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
