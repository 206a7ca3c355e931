//! `clavitor-license`: the vendor's license minter. Signs a license for one tenant with the
//! vendor's Ed25519 private key (PKCS#8 PEM from `openssl genpkey -algorithm ed25519`).
//!
//! Vendor-only: this crate is never built into a node, so the node holds no signing code. It
//! never generates keys (that is done out of band with openssl) and never prints the private key.
//! `--verify` checks the written token with the node's own validator (`clavitor::license`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use clap::Parser;
use clavitor::license::{LicenseInfo, Limit, Limits, PublicKey, canonical_payload, validate};
use ed25519_dalek::{Signer, SigningKey};
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(name = "clavitor-license", version, about = "Mint a signed Clavitor license (vendor only)")]
struct Args {
    /// The vendor's Ed25519 private key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`).
    #[arg(long)]
    private_key: PathBuf,
    /// The matching public key (PEM); required with --verify, ignored otherwise.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// The node's tenant id (`--tenant-id` on the node); the license works only there.
    #[arg(long)]
    tenant: String,
    /// Free-form description shown to the operator.
    #[arg(long)]
    label: Option<String>,
    /// Expiry: YYYY-MM-DD (00:00 UTC) or unix seconds.
    #[arg(long)]
    expires: String,
    /// Days after expiry during which the caps still apply.
    #[arg(long, default_value_t = 0)]
    grace_days: u32,
    #[arg(long)]
    max_vaults: Option<u64>,
    #[arg(long)]
    max_agents_per_vault: Option<u64>,
    #[arg(long)]
    max_passkeys_per_vault: Option<u64>,
    #[arg(long)]
    max_entries_per_vault: Option<u64>,
    #[arg(long)]
    max_audit_retention_days: Option<u64>,
    /// Write the token here (else stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// After writing, check the token with the node's validator against --public-key; on
    /// failure delete the output file and exit non-zero.
    #[arg(long, requires = "public_key")]
    verify: bool,
}

/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410); the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

fn pem_body(pem: &str, label: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body: Zeroizing<String> = Zeroizing::new(
        pem.lines().map(str::trim).skip_while(|l| *l != begin).skip(1).take_while(|l| *l != end).collect(),
    );
    if body.is_empty() {
        return Err(format!("no {begin} block"));
    }
    STANDARD.decode(body.as_bytes()).map(Zeroizing::new).map_err(|_| "bad base64 in PEM".into())
}

fn load_signing_key(path: &Path) -> Result<SigningKey, String> {
    let pem = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?);
    let der = pem_body(&pem, "PRIVATE KEY").map_err(|e| format!("{}: {e}", path.display()))?;
    let seed: [u8; 32] = der
        .strip_prefix(&PKCS8_ED25519_PREFIX[..])
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("{}: not an Ed25519 PKCS#8 private key", path.display()))?;
    let key = SigningKey::from_bytes(&seed);
    let mut seed = seed;
    zeroize::Zeroize::zeroize(&mut seed);
    Ok(key)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_expires(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    let parts: Vec<&str> = s.split('-').collect();
    let bad = || format!("--expires {s:?}: expected YYYY-MM-DD or unix seconds");
    let [y, m, d] = parts.as_slice() else { return Err(bad()) };
    let (y, m, d): (i64, i64, i64) =
        (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * 86_400)
}

/// The token: `base64url(canonical payload).base64url(signature)`.
fn mint(info: &LicenseInfo, key: &SigningKey) -> String {
    let payload = canonical_payload(info);
    let sig = key.sign(&payload);
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn run(args: &Args) -> Result<(), String> {
    if args.tenant.is_empty() {
        return Err("--tenant must not be empty".into());
    }
    let key = load_signing_key(&args.private_key)?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs() as i64;
    let exp = parse_expires(&args.expires)?;
    let limits = [
        (Limit::MaxVaults, args.max_vaults),
        (Limit::MaxAgentsPerVault, args.max_agents_per_vault),
        (Limit::MaxPasskeysPerVault, args.max_passkeys_per_vault),
        (Limit::MaxEntriesPerVault, args.max_entries_per_vault),
        (Limit::MaxAuditRetentionDays, args.max_audit_retention_days),
    ]
    .into_iter()
    .filter_map(|(l, v)| v.map(|v| (l, v)))
    .collect();
    let info = LicenseInfo {
        license_id: uuid::Uuid::new_v4(),
        tenant_id: args.tenant.clone(),
        label: args.label.clone(),
        iat: now,
        exp,
        grace_period_days: args.grace_days,
        limits: Limits(limits),
    };
    let token = mint(&info, &key);
    match &args.output {
        Some(path) => std::fs::write(path, format!("{token}\n")).map_err(|e| format!("{}: {e}", path.display()))?,
        None => println!("{token}"),
    }
    if args.verify {
        let verified = verify_written(args, &token);
        if let Err(e) = verified {
            if let Some(path) = &args.output {
                let _ = std::fs::remove_file(path);
            }
            return Err(format!("verification failed, token discarded: {e}"));
        }
        eprintln!("verified against {}", args.public_key.as_deref().unwrap_or(Path::new("")).display());
    }
    Ok(())
}

/// Re-reads what was written (catching a bad write) and validates it with the node's validator.
fn verify_written(args: &Args, printed: &str) -> Result<(), String> {
    let pub_path = args.public_key.as_deref().ok_or("--verify needs --public-key")?;
    let pem = std::fs::read_to_string(pub_path).map_err(|e| format!("{}: {e}", pub_path.display()))?;
    let key = PublicKey::from_pem(&pem).map_err(|e| e.to_string())?;
    let token = match &args.output {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => printed.to_owned(),
    };
    validate(&token, &key, &args.tenant).map(|_| ()).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clavitor-license: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_round_trips_through_the_node_validator_and_is_stable() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = PublicKey::from_bytes(key.verifying_key().as_bytes()).unwrap();
        let info = LicenseInfo {
            license_id: uuid::Uuid::new_v4(),
            tenant_id: "acme".into(),
            label: None,
            iat: 1,
            exp: 2_000_000_000,
            grace_period_days: 7,
            limits: Limits([(Limit::MaxVaults, 3)].into_iter().collect()),
        };
        let token = mint(&info, &key);
        assert_eq!(token, mint(&info, &key), "Ed25519 and the canonical JSON are deterministic");
        assert_eq!(validate(&token, &public, "acme").unwrap(), info);
    }

    #[test]
    fn expiry_dates() {
        assert_eq!(parse_expires("1970-01-01").unwrap(), 0);
        assert_eq!(parse_expires("2027-04-25").unwrap(), 1_808_611_200);
        assert_eq!(parse_expires("1777075200").unwrap(), 1_777_075_200);
        assert!(parse_expires("2027-13-01").is_err());
        assert!(parse_expires("soon").is_err());
    }
}
