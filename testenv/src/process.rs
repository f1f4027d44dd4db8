//! Supervised child processes: each in its own process group, output to a
//! log file, with the signals the scenarios need (stop, kill, pause, resume)
//! and restart from the same command line.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How to start a process; kept so that `restart` runs the same command line.
#[derive(Clone, Debug)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    /// SIGKILL the child when the thread that spawned it exits (see [`Spec::die_with_parent`]).
    pub die_with_parent: bool,
}

impl Spec {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Spec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            die_with_parent: false,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The child gets SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`),
    /// so nothing outlives a test binary that exits without dropping it (a
    /// `static`, an abort, a SIGKILL). Linux ties this to the spawning
    /// *thread*: spawn from a thread that lives as long as the child should
    /// (a test's thread, a runtime worker, a dedicated thread).
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }
}

/// One supervised process, for benchmarks and diagnostics.
#[derive(Clone, Debug)]
pub struct Component {
    pub name: String,
    pub pid: Option<u32>,
    /// Resident memory in KiB (`None` once exited).
    pub rss_kib: Option<u64>,
    pub log: PathBuf,
}

/// How [`Process::stop`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// It exited by itself within the grace period (else it was killed).
    pub exited_in_time: bool,
    /// `exit status: 0`, `signal: 9 (SIGKILL)`, ...
    pub status: String,
    /// Exited in time with status 0.
    pub success: bool,
}

/// A running (or exited) child process. Dropping it kills its process group.
#[derive(Debug)]
pub struct Process {
    name: String,
    spec: Spec,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `spec`, appending stdout and stderr to `log`.
    pub fn spawn(name: impl Into<String>, spec: Spec, log: impl Into<PathBuf>) -> Result<Process> {
        let mut p = Process {
            name: name.into(),
            spec,
            log: log.into(),
            child: None,
        };
        p.start()?;
        Ok(p)
    }

    fn start(&mut self) -> Result<()> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(Error::io(&self.log))?;
        let err = out.try_clone().map_err(Error::io(&self.log))?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own group: signals reach the whole tree, and a Ctrl-C in the
            // terminal is handled by us (we kill the group on drop).
            .process_group(0);
        if let Some(dir) = &self.spec.cwd {
            cmd.current_dir(dir);
        }
        if self.spec.die_with_parent {
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent may have died before the prctl took effect.
                    if libc::getppid() != parent {
                        return Err(std::io::Error::other("parent exited during spawn"));
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            what: self.name.clone(),
            source,
        })?;
        self.child = Some(child);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        // A reaped child's pid may be reused: signal only a live one.
        if self.exit_status().is_some() {
            return Err(Error::failed(&self.name, "has exited"));
        }
        let Some(pid) = self.pid() else {
            return Err(Error::failed(&self.name, "is not running"));
        };
        // SAFETY: plain kill(2) on the process group this struct created.
        if unsafe { libc::kill(-(pid as libc::pid_t), sig) } != 0 {
            return Err(Error::failed(&self.name, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// `None` while running; the exit status once it has exited.
    pub fn exit_status(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// SIGKILL to the group, then reap. The exit status stays readable.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                // SAFETY: see `signal`.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            }
            let _ = child.wait();
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Result<Stopped> {
        let Some(child) = self.child.as_mut() else {
            return Ok(Stopped {
                exited_in_time: true,
                status: "never started".into(),
                success: false,
            });
        };
        let mut exited = child.try_wait().ok().flatten();
        if exited.is_none() {
            // A stopped process cannot handle SIGTERM.
            let _ = self.signal(libc::SIGCONT);
            let _ = self.signal(libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while exited.is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
            }
        }
        let exited_in_time = exited.is_some();
        // Whatever is left of the group goes too.
        self.kill()?;
        let status = self.child.as_mut().and_then(|c| c.wait().ok());
        Ok(Stopped {
            exited_in_time,
            status: status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            success: exited_in_time && status.is_some_and(|s| s.success()),
        })
    }

    /// SIGSTOP: the process stays, frozen, holding its sockets open.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    pub fn resume(&mut self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// Starts the same command line again (after `stop` or `kill`).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.start()
    }

    /// Name, pid, memory and log, for benchmarks and diagnostics.
    pub fn component(&self) -> Component {
        Component {
            name: self.name.clone(),
            pid: self.pid(),
            rss_kib: self.rss_kib(),
            log: self.log.clone(),
        }
    }

    /// Resident memory of the process (not its children), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_field(self.pid()?, "VmHWM:")
    }

    /// Number of threads of the process.
    pub fn threads(&self) -> Option<u64> {
        status_field(self.pid()?, "Threads:")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// An error for a process that died before it was ready, with its log.
    pub fn exited_error(&mut self) -> Option<Error> {
        let status = self.exit_status()?;
        Some(Error::Exited {
            what: self.name.clone(),
            status,
            log: self.log.clone(),
            tail: self.log_tail(20),
        })
    }

    pub fn not_ready_error(&self, waited: Duration, detail: impl std::fmt::Display) -> Error {
        Error::NotReady {
            what: self.name.clone(),
            secs: waited.as_secs(),
            detail: detail.to_string(),
            log: self.log.clone(),
            tail: self.log_tail(20),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// `VmRSS` of a pid, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// A numeric field of `/proc/PID/status` (`VmRSS:`, `Threads:`, ...).
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The last `lines` lines of a file (reads at most its last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `probe` every `every` until it returns `Ok(Some(_))`, the process
/// exits (its log tail becomes the error), or `timeout` passes.
pub async fn wait_ready<T, F, Fut>(
    proc_: &mut Process,
    timeout: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Option<T>, String>>,
{
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    loop {
        if let Some(e) = proc_.exited_error() {
            return Err(e);
        }
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if start.elapsed() > timeout {
            return Err(proc_.not_ready_error(start.elapsed(), last));
        }
        tokio::time::sleep(every).await;
    }
}
