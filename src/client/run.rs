//! `clavitor run` and MCP's `run_with_secrets`: resolve the `clavitor://` references among some
//! environment variables, start a command with the values in its environment, and pass its
//! stdout/stderr through the masker. `run_masked` streams (forwarding SIGINT/SIGTERM, returning
//! the exit code); `run_captured` collects the masked output with a size cap and a timeout.
//!
//! Must never: write a value to clavitor's own stdout/stderr (errors name the variable and the
//! reference), or hand the child clavitor's token unless the caller asked for it.
//!
//! Env file format (`--env-file`): one `KEY=VALUE` per line; blank lines and lines starting with
//! `#` are skipped; an optional `export ` before the key; a VALUE wrapped in matching single or
//! double quotes loses them (nothing inside is unescaped or expanded); KEY is letters, digits and
//! `_`, not starting with a digit. A variable in the file overrides one of the same name in the
//! process environment.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::mask::{Masker, Secrets};
use super::{ClientError, REF_PREFIX, SecretRef, VaultClient};

/// The variable that carries the token; removed from the child's environment unless asked.
pub const TOKEN_VAR: &str = "CLAVITOR_TOKEN";

/// One variable to give the child, with its value as written (a reference or a plain value).
pub type Var = (String, Zeroizing<String>);

/// The variables of `env` whose value is a `clavitor://` reference (the rest the child inherits
/// anyway). Variables whose name or value is not UTF-8 are left alone.
pub fn references_in<I: IntoIterator<Item = (OsString, OsString)>>(env: I) -> Vec<Var> {
    env.into_iter()
        .filter_map(|(k, v)| {
            let v = Zeroizing::new(v.into_string().ok()?);
            if !v.starts_with(REF_PREFIX) {
                return None;
            }
            Some((k.into_string().ok()?, v))
        })
        .collect()
}

/// Reads an env file (format in the module comment).
pub fn read_env_file(path: &Path) -> Result<Vec<Var>, ClientError> {
    let err =
        |line: usize, reason: &str| ClientError::EnvFile { path: path.to_owned(), line, reason: reason.to_owned() };
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text)).map_err(|e| ClientError::EnvFile {
        path: path.to_owned(),
        line: 0,
        reason: e.to_string(),
    })?;
    let mut vars = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        // The reason never quotes the line: it may hold a plain secret.
        let (key, value) = line.split_once('=').ok_or_else(|| err(n + 1, "expected KEY=VALUE"))?;
        let key = key.trim();
        let valid_key = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err(err(n + 1, "the name must be letters, digits and _, not starting with a digit"));
        }
        let value = value.trim();
        let unquoted = match value.as_bytes() {
            [q @ (b'"' | b'\''), .., last] if last == q && value.len() >= 2 => &value[1..value.len() - 1],
            [b'"' | b'\'', ..] => return Err(err(n + 1, "a quoted value must end with the same quote")),
            _ => value,
        };
        vars.push((key.to_owned(), Zeroizing::new(unquoted.to_owned())));
    }
    Ok(vars)
}

/// The child's environment: every variable to set, and the values to mask.
pub struct Resolved {
    set: Vec<Var>,
    secrets: Secrets,
    /// How many references were resolved (each one an audited read).
    pub resolved: usize,
}

impl Resolved {
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// A command for `program args` with the resolved environment. The child inherits
    /// clavitor's environment minus `CLAVITOR_TOKEN`; with `pass_token`, `CLAVITOR_TOKEN` is set
    /// to clavitor's token instead (whether it came from the variable or a file).
    pub fn command(&self, client: &VaultClient, program: &OsString, args: &[OsString], pass_token: bool) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd.env_remove(TOKEN_VAR);
        for (k, v) in &self.set {
            cmd.env(k, v.as_str());
        }
        if pass_token {
            cmd.env(TOKEN_VAR, client.config().token().as_str());
        }
        cmd
    }
}

/// Resolves every variable whose value is a `clavitor://` reference (one audited read each);
/// other variables are set as they are. Later variables override earlier ones of the same name.
/// The token is always among the masked values, in case the child gets hold of it.
pub fn resolve(client: &VaultClient, vars: Vec<Var>) -> Result<Resolved, ClientError> {
    // Overridden variables are dropped first, so their references are never read.
    let mut last: Vec<Var> = Vec::with_capacity(vars.len());
    for (k, v) in vars {
        last.retain(|(name, _)| name != &k);
        last.push((k, v));
    }
    let mut set: Vec<Var> = Vec::with_capacity(last.len());
    let mut masked: Vec<Zeroizing<Vec<u8>>> = vec![Zeroizing::new(client.config().token().as_bytes().to_vec())];
    let mut resolved = 0;
    for (k, v) in last {
        if !v.starts_with(REF_PREFIX) {
            set.push((k, v));
            continue;
        }
        let wrap = |cause: ClientError| ClientError::Resolve { var: k.clone(), cause: Box::new(cause) };
        let r = SecretRef::parse(&v).map_err(wrap)?;
        let value = client.field(&r).map_err(wrap)?;
        resolved += 1;
        masked.push(Zeroizing::new(value.as_bytes().to_vec()));
        set.push((k, value));
    }
    Ok(Resolved { set, secrets: Secrets::new(masked), resolved })
}

static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // A signal the terminal generated (Ctrl-C) has a positive si_code (SI_KERNEL) and already
    // reached the child, which is in the same foreground process group: forwarding it would
    // deliver it twice. One sent by a process (kill, timeout, systemd: si_code <= 0) reached
    // clavitor alone.
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let from_terminal = !info.is_null() && unsafe { (*info).si_code } > 0;
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 && !from_terminal {
        // SAFETY: kill is async-signal-safe; the pid is our child's (it is cleared after reaping).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Sends SIGINT and SIGTERM that clavitor receives on to `pid` (the child), so the child
/// decides how to stop and clavitor reports its exit.
fn forward_signals_to(pid: u32) {
    CHILD_PID.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = forward_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only reads an atomic and calls kill(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The exit code a shell would report: the child's, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

/// Reads `from` to its end through a masker into `to`. Stops reading if `to` fails (e.g. a
/// closed pipe), so the child sees its own write fail as it would without clavitor.
fn pump<R: Read, W: Write>(mut from: R, to: W, secrets: Secrets) -> io::Result<W> {
    let mut masker = Masker::new(to, secrets);
    let mut buf = Zeroizing::new(vec![0u8; 8192]);
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => masker.push(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    masker.finish()
}

fn spawn(cmd: &mut Command) -> Result<Child, ClientError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.spawn().map_err(|cause| ClientError::Spawn { program, cause })
}

/// Runs `cmd` with stdin inherited and its stdout/stderr masked onto clavitor's, forwarding
/// SIGINT and SIGTERM; returns the exit code to exit with.
pub fn run_masked(mut cmd: Command, secrets: &Secrets) -> Result<i32, ClientError> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::inherit()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // If clavitor itself is killed (SIGKILL cannot be forwarded), the child gets SIGTERM rather
    // than running on with the secrets in its environment and no masker on its output. The
    // parent-death signal follows the spawning thread: this runs on `clavitor run`'s main thread,
    // which lives until the child has exited.
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    let parent = std::process::id();
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Clavitor died before the prctl took effect: do not start the command at all.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::other("clavitor exited before the command started"));
            }
            Ok(())
        });
    }
    let mut child = spawn(&mut cmd)?;
    forward_signals_to(child.id());
    let out = child.stdout.take().map(|o| {
        let s = secrets.clone();
        std::thread::spawn(move || pump(o, io::stdout(), s).map(drop))
    });
    let err = child.stderr.take().map(|e| {
        let s = secrets.clone();
        std::thread::spawn(move || pump(e, io::stderr(), s).map(drop))
    });
    let status = child.wait().map_err(|e| ClientError::Io(format!("waiting for the command: {e}")))?;
    CHILD_PID.store(0, Ordering::SeqCst);
    // Output the child left in the pipes (or that a grandchild still writes) is passed on in full.
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    Ok(exit_code(status))
}

/// Limits of `run_captured`.
#[derive(Debug, Clone, Copy)]
pub struct CaptureLimits {
    /// Bytes kept of each of stdout and stderr (after masking); the rest is dropped.
    pub max_output: usize,
    /// The command (and its process group) is killed after this long.
    pub timeout: Duration,
}

/// What a captured run produced; output is masked, then cut at the cap, then decoded lossily.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Captured {
    pub stdout: String,
    pub stderr: String,
    /// The exit code (128 + signal if killed; 137 after a timeout's SIGKILL).
    pub exit_code: i32,
    pub timed_out: bool,
    /// Whether stdout or stderr was cut at `max_output`.
    pub truncated: bool,
}

/// A writer that keeps the first `cap` bytes and notes that more came.
#[derive(Clone)]
struct Capped(Arc<Mutex<(Vec<u8>, bool)>>, usize);

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.1.saturating_sub(g.0.len());
        let take = room.min(data.len());
        g.0.extend_from_slice(&data[..take]);
        if take < data.len() {
            g.1 = true;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `cmd` with stdin empty, in its own process group, collecting masked stdout and stderr;
/// kills the group at the timeout. Output a lingering grandchild writes after the command has
/// exited is waited for at most one second.
pub fn run_captured(mut cmd: Command, secrets: &Secrets, limits: CaptureLimits) -> Result<Captured, ClientError> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = spawn(&mut cmd)?;
    let sinks = [
        Capped(Arc::new(Mutex::new((Vec::new(), false))), limits.max_output),
        Capped(Arc::new(Mutex::new((Vec::new(), false))), limits.max_output),
    ];
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let readers: Vec<Box<dyn Read + Send>> = [
        child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
        child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut pumps = 0;
    for (reader, sink) in readers.into_iter().zip(sinks.iter().cloned()) {
        let s = secrets.clone();
        let tx = done_tx.clone();
        pumps += 1;
        std::thread::spawn(move || {
            let _ = pump(reader, sink, s);
            let _ = tx.send(());
        });
    }
    drop(done_tx);
    let deadline = Instant::now() + limits.timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                kill_group(&child);
                break child.wait().map_err(|e| ClientError::Io(format!("waiting for the command: {e}")))?;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(ClientError::Io(format!("waiting for the command: {e}"))),
        }
    };
    let grace = Instant::now() + Duration::from_secs(1);
    for _ in 0..pumps {
        if done_rx.recv_timeout(grace.saturating_duration_since(Instant::now())).is_err() {
            kill_group(&child);
            break;
        }
    }
    let take = |c: &Capped| {
        let g = c.0.lock().unwrap_or_else(|p| p.into_inner());
        (String::from_utf8_lossy(&g.0).into_owned(), g.1)
    };
    let (stdout, t1) = take(&sinks[0]);
    let (stderr, t2) = take(&sinks[1]);
    Ok(Captured { stdout, stderr, exit_code: exit_code(status), timed_out, truncated: t1 || t2 })
}

fn kill_group(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signals the process group the child leads (process_group(0) made it).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, "# comment\n\nA=1\nexport B = \"clavitor://1/x\"\nC='it''s'\nD=\nE=a=b\n").unwrap();
        let vars = read_env_file(&path).unwrap();
        let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("A", "1"), ("B", "clavitor://1/x"), ("C", "it''s"), ("D", ""), ("E", "a=b")]);
        for bad in ["NOVALUE\n", "1A=x\n", "A=\"open\n", "A B=x\n"] {
            std::fs::write(&path, bad).unwrap();
            let err = read_env_file(&path).unwrap_err().to_string();
            assert!(err.contains("line 1"), "{bad}: {err}");
        }
        std::fs::write(&path, "A=\"s3cr3t\n").unwrap();
        assert!(!read_env_file(&path).unwrap_err().to_string().contains("s3cr3t"));
    }

    #[test]
    fn captured_runs_are_masked_capped_and_timed_out() {
        let secrets = Secrets::new([Zeroizing::new(b"s3cr3t".to_vec())]);
        let limits = CaptureLimits { max_output: 1000, timeout: Duration::from_secs(20) };
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf 'a s3c'; sleep 0.2; printf 'r3t b'; printf 's3cr3t' >&2; exit 3"]);
        let c = run_captured(cmd, &secrets, limits).unwrap();
        assert_eq!(
            (c.stdout.as_str(), c.stderr.as_str(), c.exit_code),
            ("a <concealed by clavitor> b", "<concealed by clavitor>", 3)
        );
        assert!(!c.timed_out && !c.truncated);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "head -c 5000 /dev/zero"]);
        let c = run_captured(cmd, &secrets, limits).unwrap();
        assert!(c.truncated && c.stdout.len() == 1000);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 30"]);
        // Two seconds: `sh` must have started and echoed before the limit, also on a loaded machine.
        let c =
            run_captured(cmd, &secrets, CaptureLimits { max_output: 1000, timeout: Duration::from_secs(2) }).unwrap();
        assert!(c.timed_out && c.exit_code == 137 && c.stdout == "started\n", "{c:?}");
    }
}
