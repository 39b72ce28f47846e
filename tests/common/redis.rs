//! Private `redis-server` instances on loopback, one per test: own port, own data directory,
//! AOF on (as production), killed when dropped. Tests can kill and restart them.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running private Redis.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory (kept across restarts).
    dir: PathBuf,
    /// The process, while running.
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port. The port is free when asked but may be taken before
    /// redis-server binds it (tests run in parallel): then it tries another.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("free port")
                .port();
            let dir =
                std::env::temp_dir().join(format!("wasup-redis-{port}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("redis dir");
            let mut server = RedisServer {
                port,
                dir,
                child: None,
            };
            if server.launch() {
                return server;
            }
        }
        panic!("redis-server did not start on any of five free ports");
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (SIGKILL): nothing is flushed beyond what AOF already wrote.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.launch(), "redis-server did not start");
    }

    /// Starts it and waits until it answers; `false` when it exited first (its port was taken).
    fn launch(&mut self) -> bool {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .args(["--maxmemory-policy", "noeviction", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|child| child.try_wait().ok().flatten().is_some());
            if exited || started.elapsed() > Duration::from_secs(10) {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Whether it answers PING.
    pub fn answers(&self) -> bool {
        self.query("PING")
            .is_some_and(|answer| answer.starts_with("+PONG"))
    }

    /// Sends one inline command and returns the raw reply (enough for tests' look-ups).
    pub fn query(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut buffer = vec![0u8; 1 << 20];
        let read = stream.read(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..read]).into_owned())
    }
}

impl RedisServer {
    /// `GET key` as a string (`None` when missing or unreachable).
    pub fn get(&self, key: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("GET {key}\r\n").as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let read = stream.read(&mut chunk).ok()?;
            if read == 0 {
                return None;
            }
            reply.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&reply);
            let (header, rest) = text.split_once("\r\n")?;
            let length: i64 = header.strip_prefix('$')?.parse().ok()?;
            if length < 0 {
                return None;
            }
            let length = usize::try_from(length).ok()?;
            if rest.len() >= length {
                return Some(rest[..length].to_string());
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
