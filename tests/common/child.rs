//! wasup as a child process (the real binary), for signal and kill -9 tests.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use serde_json::Value;

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// The built `wasup` binary, run from the repository root.
pub fn wasup_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasup"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// A running wasup process, killed when dropped.
pub struct Running {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Running {
    /// Starts wasup on `port` against `laravel_url` and `redis_url`, keeping sessions in
    /// `data_dir`, with JSON logs on a pipe and `env` on top.
    pub fn spawn(
        port: u16,
        laravel_url: &str,
        redis_url: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Running {
        let mut command = wasup_command();
        command
            .env("WASUP__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("LARAVEL_API", laravel_url)
            .env("REDIS_URL", redis_url)
            .env("WASUP__ENGINE__DATA_DIR", data_dir)
            .env("WASUP_ENGINE", "simulated")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        Running {
            child: command.spawn().expect("spawn wasup"),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits (without blocking the test's runtime, which serves the stand-in Laravel) until the
    /// process exits; its exit status, or `None` when it still runs after `within`.
    pub async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if started.elapsed() >= within {
                return None;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// One JSON call; `None` when wasup does not answer.
pub async fn call(
    client: &awc::Client,
    method: awc::http::Method,
    url: String,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let request = client.request(method, url).timeout(Duration::from_secs(5));
    let mut response = match body {
        Some(body) => request.send_json(&body).await.ok()?,
        None => request.send().await.ok()?,
    };
    let bytes = response.body().await.ok()?;
    Some((
        response.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}
