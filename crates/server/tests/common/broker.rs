//! A broker of the test's own, for tests that stop and restart it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Tansu binary the test command installed, or `None` (said on stderr).
pub fn tansu_binary(test: &str) -> Option<PathBuf> {
    match std::env::var_os("ACTEON_TANSU_BIN") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            assert!(
                std::env::var_os("ACTEON_REQUIRE_KAFKA").is_none(),
                "ACTEON_REQUIRE_KAFKA is set but ACTEON_TANSU_BIN is not: no broker for {test}"
            );
            eprintln!("skipping {test}: ACTEON_TANSU_BIN is not set");
            None
        }
    }
}

/// A Tansu broker on a fixed port, storing in SQLite so its topics survive
/// a restart.
#[derive(Debug)]
pub struct OwnBroker {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnBroker {
    pub fn start(binary: PathBuf, dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let mut broker = Self {
            binary,
            port,
            dir: dir.to_owned(),
            child: None,
        };
        broker.restart();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the broker on the same port and data, and waits until it
    /// accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .expect("broker log");
        let child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // Tansu reads the first segment of a sqlite:// URL as a host,
            // so the file is named relative to the broker's directory.
            .args(["--storage-engine", "sqlite://broker.db"])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
