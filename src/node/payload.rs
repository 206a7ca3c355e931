//! The telemetry payload: exactly the fields of infrastructure.md ("Metrics Payload") plus
//! `wg_handshake_age_s`, gathered from sysinfo, the file system and the server's own counters.
//!
//! The same payload goes to HQ as JSON and, condensed, into the Kuma push message; `clavitor
//! telemetry show` prints one.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::integrity::{self, DbIntegrity};
use super::{NodeError, metrics, tls, wg};
use crate::vault::DataDir;

/// Where NixOS keeps the current system generation (`system-<n>-link`).
pub const NIX_SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";
const MIB: u64 = 1024 * 1024;

/// One report. Field names and types are the reference's; the last field is the WireGuard hub
/// handshake age. `null` means "not applicable here" (no certificate, not NixOS, no tunnel).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Payload {
    pub node: String,
    pub ts: u64,
    pub ram_mb: u64,
    pub ram_pct: f64,
    pub disk_mb: u64,
    pub disk_pct: f64,
    pub cpu_pct: f64,
    pub db_size_mb: u64,
    pub db_integrity: DbIntegrity,
    pub active_sessions: u64,
    pub req_1h: u64,
    pub err_1h: u64,
    pub cert_days_remaining: Option<i64>,
    pub nix_gen: Option<u64>,
    pub uptime_s: u64,
    pub wg_handshake_age_s: Option<u64>,
    /// The edition's own fields (commercial: `license_state`, `license_days_remaining`,
    /// `license_last_validated_age_s`); none in the community edition.
    #[serde(flatten)]
    pub edition: serde_json::Map<String, serde_json::Value>,
}

/// How the integrity field is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegritySource {
    /// The server's scheduled checks (never run on demand).
    Scheduled,
    /// Run a quick check now (`clavitor telemetry show`, a one-shot process).
    CheckNow,
}

/// What a payload is gathered from; kept across reports so CPU usage is measured between them.
pub struct PayloadSource {
    pub dir: DataDir,
    pub cert: tls::CertSource,
    pub wg: Option<wg::WgTarget>,
    pub integrity: IntegritySource,
    started: Instant,
    system: Option<sysinfo::System>,
    cpu_primed: bool,
}

impl PayloadSource {
    pub fn new(dir: DataDir, cert: tls::CertSource, wg: Option<wg::WgTarget>, integrity: IntegritySource) -> Self {
        Self { dir, cert, wg, integrity, started: Instant::now(), system: None, cpu_primed: false }
    }

    /// Gathers one payload. Blocking (file system, sysinfo, possibly a quick check): call it
    /// from a background thread, never from a request.
    pub fn collect(&mut self) -> Payload {
        let m = metrics();
        let (ram_mb, ram_pct, cpu_pct) = self.machine();
        let (disk_mb, disk_pct) = disk_usage(&self.dir.root).unwrap_or((0, 0.0));
        let db_integrity = match self.integrity {
            IntegritySource::Scheduled => integrity::latest(),
            IntegritySource::CheckNow => {
                if integrity::check_files(&integrity::db_files(&self.dir), false).is_empty() {
                    DbIntegrity::Ok
                } else {
                    DbIntegrity::Failed
                }
            }
        };
        Payload {
            node: node_name(),
            ts: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            ram_mb,
            ram_pct,
            disk_mb,
            disk_pct,
            cpu_pct,
            db_size_mb: db_size_bytes(&self.dir) / MIB,
            db_integrity,
            active_sessions: m.active_sessions(),
            req_1h: m.req_1h(),
            err_1h: m.err_1h(),
            cert_days_remaining: self.cert.days_remaining(),
            nix_gen: nix_generation(Path::new(NIX_SYSTEM_PROFILE)),
            uptime_s: self.started.elapsed().as_secs(),
            wg_handshake_age_s: self.wg.as_ref().and_then(wg::WgTarget::handshake_age_secs),
            edition: crate::edition::current().telemetry_fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// (RAM used MiB, RAM used %, CPU %). CPU usage is measured since the previous call; the
    /// first call takes two samples sysinfo's minimum interval apart.
    fn machine(&mut self) -> (u64, f64, f64) {
        if self.system.is_none() {
            self.system = sysinfo::System::new().ok();
        }
        let Some(sys) = self.system.as_mut() else { return (0, 0.0, 0.0) };
        sys.refresh_memory();
        sys.refresh_cpu_usage();
        if !self.cpu_primed {
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
            sys.refresh_cpu_usage();
            self.cpu_primed = true;
        }
        let total = sys.total_memory();
        let used = total.saturating_sub(sys.available_memory());
        (used / MIB, pct(used, total), round1(f64::from(sys.global_cpu_usage())))
    }
}

fn round1(x: f64) -> f64 {
    if x.is_finite() { (x * 10.0).round() / 10.0 } else { 0.0 }
}

fn pct(part: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { round1(part as f64 * 100.0 / total as f64) }
}

/// This host's name (the fleet's node name on NixOS, e.g. "tokyo").
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Used MiB and used % of the file system holding `path`, as `df` counts them: used = size −
/// free, and the percentage is used / (used + available to unprivileged users), so the blocks
/// reserved for root are left out. `statvfs` on the path itself answers for whatever holds it
/// (tmpfs, a bind mount), with no guessing from the mount table.
pub fn disk_usage(path: &Path) -> Result<(u64, f64), NodeError> {
    let read_err = |reason: String| NodeError::Read { path: path.into(), reason };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| read_err("the path holds a NUL byte".into()))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` is writable memory of the right
    // type; statvfs fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(read_err(std::io::Error::last_os_error().to_string()));
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize;
    let used = st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(frsize);
    let avail = st.f_bavail.saturating_mul(frsize);
    Ok((used / MIB, pct(used, used.saturating_add(avail))))
}

/// Bytes of every database file with its write-ahead log.
pub fn db_size_bytes(dir: &DataDir) -> u64 {
    integrity::db_files(dir)
        .iter()
        .flat_map(|db| {
            let mut wal = db.clone().into_os_string();
            wal.push("-wal");
            [db.clone(), PathBuf::from(wal)]
        })
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The NixOS system generation: `system` links to `system-<n>-link`. None off NixOS.
pub fn nix_generation(profile: &Path) -> Option<u64> {
    let target = std::fs::read_link(profile).ok()?;
    let name = target.file_name()?.to_str()?;
    name.strip_prefix("system-")?.strip_suffix("-link")?.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;

    /// The reference's example figures, shared with the Kuma tests.
    pub(crate) fn sample() -> Payload {
        Payload {
            node: "tokyo".into(),
            ts: 1_709_312_400,
            ram_mb: 142,
            ram_pct: 27.7,
            disk_mb: 3200,
            disk_pct: 31.2,
            cpu_pct: 2.1,
            db_size_mb: 12,
            db_integrity: DbIntegrity::Ok,
            active_sessions: 3,
            req_1h: 847,
            err_1h: 2,
            cert_days_remaining: Some(62),
            nix_gen: Some(2),
            uptime_s: 864_000,
            wg_handshake_age_s: Some(17),
            edition: serde_json::Map::new(),
        }
    }

    /// The reference payload of infrastructure.md, verbatim.
    const REFERENCE: &str = r#"{
        "node": "tokyo", "ts": 1709312400, "ram_mb": 142, "ram_pct": 27.7, "disk_mb": 3200,
        "disk_pct": 31.2, "cpu_pct": 2.1, "db_size_mb": 12, "db_integrity": "ok",
        "active_sessions": 3, "req_1h": 847, "err_1h": 2, "cert_days_remaining": 62,
        "nix_gen": 2, "uptime_s": 864000
    }"#;

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::String(_) => "string",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "float",
            Value::Null => "null",
            _ => "other",
        }
    }

    #[test]
    fn fields_match_the_reference_names_and_types() {
        let reference: serde_json::Map<String, Value> = serde_json::from_str(REFERENCE).unwrap();
        let ours = serde_json::to_value(sample()).unwrap();
        let ours = ours.as_object().unwrap();
        let mut expected: Vec<&str> = reference.keys().map(String::as_str).collect();
        expected.push("wg_handshake_age_s");
        let mut got: Vec<&str> = ours.keys().map(String::as_str).collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected, "exactly the reference fields plus wg_handshake_age_s");
        for (name, value) in &reference {
            assert_eq!(kind(&ours[name]), kind(value), "type of {name}");
        }
        // With the sample's figures the payload is the reference, byte for byte in meaning.
        for (name, value) in &reference {
            assert_eq!(&ours[name], value, "{name}");
        }
        assert_eq!(kind(&ours["wg_handshake_age_s"]), "integer");
    }

    #[test]
    fn absent_figures_are_null_and_integrity_words() {
        let mut p = sample();
        p.cert_days_remaining = None;
        p.nix_gen = None;
        p.wg_handshake_age_s = None;
        p.db_integrity = DbIntegrity::Failed;
        let v = serde_json::to_value(&p).unwrap();
        for f in ["cert_days_remaining", "nix_gen", "wg_handshake_age_s"] {
            assert!(v[f].is_null(), "{f}");
        }
        assert_eq!(v["db_integrity"], "failed");
        p.db_integrity = DbIntegrity::Unchecked;
        assert_eq!(serde_json::to_value(&p).unwrap()["db_integrity"], "unchecked");
    }

    #[test]
    fn nix_generation_from_the_profile_link() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("system");
        assert_eq!(nix_generation(&link), None, "no link: not NixOS");
        std::os::unix::fs::symlink("system-42-link", &link).unwrap();
        assert_eq!(nix_generation(&link), Some(42));
        let odd = dir.path().join("odd");
        std::os::unix::fs::symlink("/nix/store/abc-nixos-system", &odd).unwrap();
        assert_eq!(nix_generation(&odd), None);
    }

    #[test]
    fn disk_usage_is_what_df_says() {
        // df's Use% is used / (used + available), rounded up; ours has one decimal.
        let shm = std::path::PathBuf::from("/dev/shm");
        let tmp = tempfile::tempdir().unwrap();
        for path in [tmp.path(), std::path::Path::new("/"), shm.as_path()] {
            if !path.exists() {
                continue;
            }
            let out = std::process::Command::new("df").args(["-P", "-B1"]).arg(path).output().unwrap();
            assert!(out.status.success(), "df {}", path.display());
            let text = String::from_utf8(out.stdout).unwrap();
            let cols: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
            let (used, avail): (u64, u64) = (cols[2].parse().unwrap(), cols[3].parse().unwrap());
            let df_pct: f64 = cols[4].trim_end_matches('%').parse().unwrap();
            let (mb, p) = disk_usage(path).unwrap();
            // The file system may change a little between the two readings.
            assert!((mb as i64 - (used / MIB) as i64).abs() <= 64, "{}: {mb} MiB vs df {used}", path.display());
            assert!(p <= df_pct + 0.5 && p >= df_pct - 1.5, "{}: {p} % vs df {df_pct} %", path.display());
            let exact = pct(used, used + avail);
            assert!((p - exact).abs() <= 1.0, "{}: {p} vs {exact}", path.display());
        }
    }

    #[test]
    fn a_real_collection_is_plausible() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().to_owned(), None);
        dir.init().unwrap();
        let mut src = PayloadSource::new(dir, tls::CertSource::None, None, IntegritySource::CheckNow);
        let p = src.collect();
        assert_eq!(p.db_integrity, DbIntegrity::Ok);
        assert!(p.ram_mb > 0 && p.ram_pct > 0.0 && p.ram_pct <= 100.0, "{p:?}");
        assert!(p.disk_pct > 0.0 && p.disk_pct <= 100.0, "{p:?}");
        assert!((0.0..=100.0).contains(&p.cpu_pct), "{p:?}");
        assert!(p.ts > 1_700_000_000);
        assert_eq!(p.cert_days_remaining, None);
        assert_eq!(p.wg_handshake_age_s, None);
    }
}
