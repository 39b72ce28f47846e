//! wasup under systemd's `Type=notify`: READY=1 once it listens, WATCHDOG=1 while the pipeline
//! answers (with `WatchdogSec=`), STOPPING=1 when SIGTERM arrives, then a clean exit 0, all
//! through the datagram socket named by NOTIFY_SOCKET.

mod common;

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::child::{Running, free_port};

/// How long wasup may take to start, or to stop.
const PATIENCE: Duration = Duration::from_secs(15);

/// The next notification on `socket`, as text (`KEY=value` lines).
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buffer = [0_u8; 4096];
    let length = socket
        .recv(&mut buffer)
        .expect("a notification from wasup within the timeout");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

#[test]
fn systemd_hears_ready_then_stopping_and_sigterm_exits_zero() {
    let dir = std::env::temp_dir().join(format!("wasup-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");

    let mut running = Running::spawn(
        free_port(),
        "http://127.0.0.1:9/api",
        "redis://127.0.0.1:9/0",
        &dir.join("data"),
        &[
            ("NOTIFY_SOCKET", path_str(&socket_path)),
            ("WASUP__REDIS__ENABLED", "false"),
        ],
    );

    let ready = next_notification(&socket);
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    let addr = running.base.trim_start_matches("http://");
    assert!(
        ready.contains(&format!("STATUS=Listening on {addr}.")),
        "{ready:?}"
    );

    // Right after READY=1, as systemd may: the handlers must already be in place.
    let pid = running.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let stopping = next_notification(&socket);
    assert!(
        stopping.lines().any(|line| line == "STOPPING=1"),
        "{stopping:?}"
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "wasup did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "exit status");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn systemd_hears_watchdog_pings_while_the_pipeline_answers() {
    let dir = std::env::temp_dir().join(format!("wasup-watchdog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let running = Running::spawn(
        free_port(),
        "http://127.0.0.1:9/api",
        "redis://127.0.0.1:9/0",
        &dir.join("data"),
        &[
            ("NOTIFY_SOCKET", path_str(&socket_path)),
            // WatchdogSec=300ms: a ping every 100 ms.
            ("WATCHDOG_USEC", "300000"),
            ("WASUP__REDIS__ENABLED", "false"),
        ],
    );
    let ready = next_notification(&socket);
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let note = next_notification(&socket);
        if note.lines().any(|line| line == "WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "three pings came within a few intervals: {:?}",
        started.elapsed()
    );
    drop(running);
    let _ = std::fs::remove_dir_all(dir);
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}
