//! The processes a benchmark runs: a private `redis-server` and the `wasup` release binary, with
//! what `/proc` says about the latter (RSS, CPU time, threads). Shared with `wasup-chaos`, which
//! also stops and kills them.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "wasup-bench-{name}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A private Redis with AOF, as production runs it.
pub struct RedisProcess {
    /// Its port.
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl RedisProcess {
    /// Starts one and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = scratch("redis")?;
        let child = Self::spawn(port, &dir)?;
        Ok(Self { port, child, dir })
    }

    fn spawn(port: u16, dir: &std::path::Path) -> anyhow::Result<Child> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--maxmemory-policy",
                "noeviction",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server must be installed (scripts/bench installs it)")?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(child)
    }

    /// Stops it as an operator would (SIGTERM: the append-only file is written out), and waits
    /// for the exit; [`start_again`](Self::start_again) brings it back with its data.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts it again on the same port with the same data, after [`stop`](Self::stop).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.child = Self::spawn(self.port, &self.dir)?;
        Ok(())
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The wasup binary under test.
pub struct WasupProcess {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Child,
    env: Vec<(String, String)>,
    port: u16,
    /// Kept across restarts (session stores).
    data_dir: PathBuf,
}

/// Where `wasup` is: beside this benchmark's binary.
fn wasup_binary() -> anyhow::Result<PathBuf> {
    let binary = std::env::current_exe()?.with_file_name("wasup");
    if !binary.exists() {
        bail!(
            "{} not found: build it with the benchmark (scripts/bench does)",
            binary.display()
        );
    }
    Ok(binary)
}

impl WasupProcess {
    /// Starts wasup on a free port with `env` on top of the bench's defaults (simulated engine,
    /// no API key on loopback, no rate limit, warnings-only JSON logs).
    pub fn start(env: &[(&str, String)]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let data_dir = scratch("data")?;
        let mut all: Vec<(String, String)> = vec![
            ("WASUP__HTTP__LISTEN".into(), format!("127.0.0.1:{port}")),
            ("WASUP__HTTP__RATE_LIMIT_PER_MINUTE".into(), "0".into()),
            (
                "WASUP__HTTP__RATE_LIMIT_PER_KEY_PER_MINUTE".into(),
                "0".into(),
            ),
            ("WASUP__ENGINE__KIND".into(), "simulated".into()),
            (
                "WASUP__ENGINE__DATA_DIR".into(),
                data_dir.display().to_string(),
            ),
            ("LOG_FORMAT".into(), "json".into()),
            ("LOG_LEVEL".into(), "warning".into()),
        ];
        all.extend(
            env.iter()
                .map(|(name, value)| ((*name).to_string(), value.clone())),
        );
        let child = Self::spawn(&all)?;
        Ok(Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
            env: all,
            port,
            data_dir,
        })
    }

    fn spawn(env: &[(String, String)]) -> anyhow::Result<Child> {
        // `BENCH_WASUP_UNDER="heaptrack -o target/bench/heap"` runs wasup under a profiler.
        let wrapper = std::env::var("BENCH_WASUP_UNDER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(wasup_binary()?);
                command
            }
            None => Command::new(wasup_binary()?),
        };
        // `BENCH_WASUP_LOG=FILE` keeps wasup's log (appended across restarts) for a post-mortem.
        let (out, err) = match std::env::var_os("BENCH_WASUP_LOG") {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(out)
            .stderr(err);
        for (name, value) in env {
            command.env(name, value);
        }
        Ok(command.spawn()?)
    }

    /// Starts it again with the same settings and data, after [`terminate`](Self::terminate).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.child = Self::spawn(&self.env)?;
        Ok(())
    }

    /// SIGTERM and wait (at most 120 s) for the exit.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(120) {
                let _ = self.child.kill();
                bail!("wasup did not exit within 120 s of SIGTERM");
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// SIGKILL, as a crash or the OOM killer would, and wait for the exit.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// wasup's own process id: the child's, or under a wrapper (`BENCH_WASUP_UNDER`) the id of
    /// the `wasup` process the wrapper started.
    fn pid(&self) -> u32 {
        let mut queue = std::collections::VecDeque::from([self.child.id()]);
        while let Some(pid) = queue.pop_front() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "wasup" {
                return pid;
            }
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            queue.extend(
                children
                    .split_whitespace()
                    .filter_map(|child| child.parse::<u32>().ok()),
            );
        }
        self.child.id()
    }

    fn proc_status(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status("VmRSS:").unwrap_or(0)
    }

    /// OS threads.
    pub fn threads(&self) -> u64 {
        self.proc_status("Threads:").unwrap_or(0)
    }

    /// User + system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) else {
            return 0.0;
        };
        // Fields after the command name, which is in parentheses and may contain spaces.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |index: usize| {
            fields
                .get(index)
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of /proc/pid/stat: 12 and 13 after the name.
        (ticks(11) + ticks(12)) / clock_ticks()
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

impl Drop for WasupProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
