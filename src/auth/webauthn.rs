//! WebAuthn ceremonies: the relying party's configuration and the calls into webauthn-rs.
//!
//! Owns the checked `--rp-id`/`--origin` pair ([`RelyingParty`]), passkey registration and
//! assertion (via the maintained `webauthn-rs` verifier: no COSE, CBOR or signature code of our
//! own), the serialised ceremony states, and the newtypes that keep the pieces of an
//! operation-bound challenge apart ([`ChallengeId`], [`Operation`]). It never stores anything,
//! never sees HTTP types, and never decides on its own that a state may be reused: a stored
//! authentication state verifies the same assertion twice, so single use is the caller's job
//! (the store deletes the challenge row in the same transaction that checks it).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, SecurityKey, SecurityKeyAuthentication, SecurityKeyRegistration, Url, Uuid, Webauthn,
    WebauthnBuilder,
};

/// Longest assertion or registration JSON accepted (a real one is well under 4 KiB).
pub const MAX_CREDENTIAL_JSON: usize = 16 * 1024;
/// Longest path an operation may name.
pub const MAX_OPERATION_PATH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum WebauthnError {
    #[error("invalid relying party configuration: {0}")]
    Config(String),
    #[error("malformed WebAuthn data: {0}")]
    Malformed(String),
    #[error("WebAuthn verification failed: {0}")]
    Rejected(String),
    #[error("cannot start a WebAuthn ceremony: {0}")]
    Ceremony(String),
}

/// The relying party this server is: an RP id and the one origin pages are served from.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    rp_id: String,
    origin: Url,
    webauthn: Webauthn,
}

impl RelyingParty {
    /// Checks that `origin` is an http(s) origin without path, that plain http is used only for
    /// `localhost`, and that `rp_id` is the origin's host or a parent domain of it.
    pub fn new(rp_id: &str, origin: &str) -> Result<Self, WebauthnError> {
        let url = Url::parse(origin).map_err(|e| WebauthnError::Config(format!("origin {origin:?}: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        match url.scheme() {
            "https" => {}
            "http" if host == "localhost" => {}
            _ => {
                return Err(WebauthnError::Config(format!(
                    "origin {origin:?} must be https:// (plain http only for localhost)"
                )));
            }
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(WebauthnError::Config(format!("origin {origin:?} must be scheme://host[:port] only")));
        }
        if url.domain().is_none() {
            return Err(WebauthnError::Config(format!("origin {origin:?} must name a host, not an IP address")));
        }
        let webauthn = WebauthnBuilder::new(rp_id, &url)
            .map_err(|_| {
                WebauthnError::Config(format!("rp id {rp_id:?} is not the host of origin {origin:?} or a parent of it"))
            })?
            .rp_name("Clavitor")
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| WebauthnError::Config(e.to_string()))?;
        Ok(Self { rp_id: rp_id.to_owned(), origin: url, webauthn })
    }

    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// The origin without a trailing slash, e.g. `http://localhost:8080`.
    pub fn origin(&self) -> String {
        self.origin.as_str().trim_end_matches('/').to_owned()
    }

    /// Starts registering a passkey or security key for the vault's owner. User verification is
    /// *preferred*: a security key without a PIN can enroll; one that verified its user at
    /// enrollment must do so on every later assertion (webauthn-rs enforces that). `exclude`
    /// keeps an already registered authenticator from enrolling twice.
    pub fn start_registration(
        &self,
        user: Uuid,
        exclude: &[StoredPasskey],
    ) -> Result<(CreationChallengeResponse, String), WebauthnError> {
        let exclude = exclude.iter().map(|p| p.passkey.cred_id().clone()).collect::<Vec<_>>();
        let (ccr, state) = self
            .webauthn
            .start_securitykey_registration(
                user,
                "owner",
                "Vault owner",
                (!exclude.is_empty()).then_some(exclude),
                None,
                None,
            )
            .map_err(|e| WebauthnError::Ceremony(e.to_string()))?;
        let state = serde_json::to_string(&state).map_err(|e| WebauthnError::Ceremony(e.to_string()))?;
        Ok((ccr, state))
    }

    /// Verifies a registration response against its stored state; returns the new passkey.
    pub fn finish_registration(&self, state: &str, response: &str) -> Result<StoredPasskey, WebauthnError> {
        let state: SecurityKeyRegistration =
            serde_json::from_str(state).map_err(|_| WebauthnError::Malformed("stored registration state".into()))?;
        let response: RegisterPublicKeyCredential = parse_json(response, "registration response")?;
        let passkey = self
            .webauthn
            .finish_securitykey_registration(&response, &state)
            .map_err(|e| WebauthnError::Rejected(e.to_string()))?;
        Ok(StoredPasskey { passkey, sign_count: 0 })
    }

    /// Starts an assertion over every registered passkey.
    pub fn start_authentication(
        &self,
        creds: &[StoredPasskey],
    ) -> Result<(RequestChallengeResponse, String), WebauthnError> {
        let passkeys = creds.iter().map(|p| p.passkey.clone()).collect::<Vec<_>>();
        let (rcr, state) = self
            .webauthn
            .start_securitykey_authentication(&passkeys)
            .map_err(|e| WebauthnError::Ceremony(e.to_string()))?;
        let state = serde_json::to_string(&state).map_err(|e| WebauthnError::Ceremony(e.to_string()))?;
        Ok((rcr, state))
    }

    /// Verifies an assertion against a stored authentication state and the passkeys registered
    /// *now*: signature, origin, rp id, user presence, user verification where the key
    /// established it, and a signature counter that advances past the stored one (a clone or a
    /// replayed authenticator shows up as a counter that does not).
    pub fn verify_assertion(
        &self,
        state: &str,
        assertion: &str,
        registered: &[StoredPasskey],
    ) -> Result<VerifiedAssertion, WebauthnError> {
        let state: SecurityKeyAuthentication =
            serde_json::from_str(state).map_err(|_| WebauthnError::Malformed("stored authentication state".into()))?;
        let assertion: PublicKeyCredential = parse_json(assertion, "assertion")?;
        let result: AuthenticationResult = self
            .webauthn
            .finish_securitykey_authentication(&assertion, &state)
            .map_err(|e| WebauthnError::Rejected(e.to_string()))?;
        let cred_id = CredentialId::of(result.cred_id());
        let stored = registered
            .iter()
            .find(|p| p.id() == cred_id)
            .ok_or_else(|| WebauthnError::Rejected("the credential is not registered".into()))?;
        let counter = result.counter();
        if (counter > 0 || stored.sign_count > 0) && i64::from(counter) <= stored.sign_count {
            return Err(WebauthnError::Rejected(format!(
                "signature counter did not advance ({counter} after {}): possibly a cloned authenticator",
                stored.sign_count
            )));
        }
        let mut updated = stored.clone();
        updated.passkey.update_credential(&result);
        updated.sign_count = i64::from(counter);
        Ok(VerifiedAssertion { passkey: updated })
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(raw: &str, what: &str) -> Result<T, WebauthnError> {
    if raw.len() > MAX_CREDENTIAL_JSON {
        return Err(WebauthnError::Malformed(format!("{what} is too large")));
    }
    serde_json::from_str(raw).map_err(|_| WebauthnError::Malformed(format!("{what} is not valid WebAuthn JSON")))
}

/// A ceremony's challenge bytes as base64url text (what the `challenge` column records).
pub fn challenge_text(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A credential id as base64url without padding: how it is stored and named in URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialId(String);

impl CredentialId {
    pub fn of(bytes: &[u8]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts only base64url text that decodes to 1 to 1023 bytes.
    pub fn parse(s: &str) -> Result<Self, WebauthnError> {
        let ok = !s.is_empty() && s.len() <= 1400 && URL_SAFE_NO_PAD.decode(s).is_ok_and(|b| b.len() < 1024);
        if ok { Ok(Self(s.to_owned())) } else { Err(WebauthnError::Malformed("credential id".into())) }
    }

    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A registered passkey or security key with the last signature counter we accepted for it.
#[derive(Debug, Clone)]
pub struct StoredPasskey {
    passkey: SecurityKey,
    pub sign_count: i64,
}

impl StoredPasskey {
    pub fn id(&self) -> CredentialId {
        CredentialId::of(self.passkey.cred_id())
    }

    /// The passkey as stored (JSON: public key, algorithm, flags).
    pub fn to_stored(&self) -> Result<String, WebauthnError> {
        serde_json::to_string(&self.passkey).map_err(|e| WebauthnError::Ceremony(e.to_string()))
    }

    pub fn from_stored(json: &str, sign_count: i64) -> Result<Self, WebauthnError> {
        let passkey = serde_json::from_str(json).map_err(|_| WebauthnError::Malformed("stored passkey".into()))?;
        Ok(Self { passkey, sign_count })
    }
}

/// The outcome of a verified assertion: the passkey with its new counter, to be stored.
#[derive(Debug, Clone)]
pub struct VerifiedAssertion {
    pub passkey: StoredPasskey,
}

/// A challenge's id: 32 lowercase hex characters (128 random bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChallengeId(String);

impl ChallengeId {
    pub fn generate() -> Self {
        Self(hex::encode(crate::crypto::random_bytes::<16>()))
    }

    pub fn parse(s: &str) -> Result<Self, WebauthnError> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(WebauthnError::Malformed("challenge id".into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The write a challenge authorises: method, exact path, SHA-256 (hex) of the exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    method: String,
    path: String,
    body_sha256: String,
}

impl Operation {
    /// Validates a client's description of the operation it wants to authorise.
    pub fn new(method: &str, path: &str, body_sha256: &str) -> Result<Self, WebauthnError> {
        if !matches!(method, "POST" | "PUT" | "PATCH" | "DELETE") {
            return Err(WebauthnError::Malformed("method must be POST, PUT, PATCH or DELETE".into()));
        }
        let path_ok = path.starts_with("/api/")
            && path.len() <= MAX_OPERATION_PATH
            && path.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        if !path_ok {
            return Err(WebauthnError::Malformed(format!(
                "path must start with /api/ and be at most {MAX_OPERATION_PATH} printable characters without a query"
            )));
        }
        let hash_ok = body_sha256.len() == 64 && body_sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hash_ok {
            return Err(WebauthnError::Malformed("body_sha256 must be 64 lowercase hex characters".into()));
        }
        Ok(Self { method: method.to_owned(), path: path.to_owned(), body_sha256: body_sha256.to_owned() })
    }

    /// The operation a request actually is.
    pub fn of_request(method: &str, path: &str, body: &[u8]) -> Self {
        Self { method: method.to_owned(), path: path.to_owned(), body_sha256: crate::crypto::sha256_hex(body) }
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn body_sha256(&self) -> &str {
        &self.body_sha256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relying_party_must_be_consistent() {
        assert!(RelyingParty::new("localhost", "http://localhost:8080").is_ok());
        assert!(RelyingParty::new("example.com", "https://vault.example.com").is_ok());
        assert!(RelyingParty::new("vault.example.com", "https://vault.example.com:8443").is_ok());
        assert!(RelyingParty::new("example.com", "https://vault.other.com").is_err());
        assert!(RelyingParty::new("ample.com", "https://example.com").is_err());
        assert!(RelyingParty::new("example.com", "http://example.com").is_err(), "plain http off localhost");
        assert!(RelyingParty::new("localhost", "http://localhost:8080/path").is_err());
        assert!(RelyingParty::new("127.0.0.1", "http://127.0.0.1:8080").is_err());
        assert!(RelyingParty::new("localhost", "not a url").is_err());
    }

    #[test]
    fn operations_are_validated() {
        let h = "a".repeat(64);
        assert!(Operation::new("POST", "/api/agents", &h).is_ok());
        assert!(Operation::new("GET", "/api/agents", &h).is_err());
        assert!(Operation::new("POST", "/healthz", &h).is_err());
        assert!(Operation::new("POST", "/api/agents?x=1", &h).is_err());
        assert!(Operation::new("POST", "/api/agents", "ABC").is_err());
        assert_eq!(
            Operation::of_request("POST", "/api/agents", b"{}"),
            Operation::new("POST", "/api/agents", &crate::crypto::sha256_hex(b"{}")).unwrap()
        );
        assert!(ChallengeId::parse(ChallengeId::generate().as_str()).is_ok());
        assert!(ChallengeId::parse("zz").is_err());
        assert!(CredentialId::parse("AAEC").is_ok());
        assert!(CredentialId::parse("!!").is_err());
    }
}
