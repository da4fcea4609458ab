//! The real `kiln` binary as a child process, for what only a process of its own can show: its
//! peak memory (`VmHWM`), signals (SIGTERM, SIGKILL) and restarts over the same data dir. The API
//! client is the same [`KilnApi`] as the in-process [`super::kiln::Kiln`]'s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::kiln::{ADMIN_TOKEN, KilnApi};
use super::{Registry, free_port, wait_until};

pub struct KilnProcess {
    child: Child,
    pub api: KilnApi,
    /// Its data dir: the test's own (to start kiln again over it), or a temp dir this owns.
    pub data_dir: PathBuf,
    _temp_dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for KilnProcess {
    type Target = KilnApi;
    fn deref(&self) -> &KilnApi {
        &self.api
    }
}

impl KilnProcess {
    /// Starts `kiln serve` over a new temp data dir, pushing to `registry`, with the defaults of
    /// [`super::kiln::Kiln::start`] and `extra` KILN_* variables on top. Returns once it answers
    /// `/healthz`.
    pub async fn start(registry: &Registry, extra: &[(&str, &str)]) -> KilnProcess {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().to_path_buf();
        Self::spawn(registry, &data_dir, extra, Some(temp), None).await
    }

    /// The same over `data_dir`, which the test keeps: a second start is a restart of kiln.
    pub async fn start_in(
        registry: &Registry,
        data_dir: &Path,
        extra: &[(&str, &str)],
    ) -> KilnProcess {
        Self::spawn(registry, data_dir, extra, None, None).await
    }

    /// The same over `data_dir`, listening on `port`: a restart keeps the address that clients (and
    /// a registry's notifications) use.
    pub async fn start_in_on(
        registry: &Registry,
        data_dir: &Path,
        port: u16,
        extra: &[(&str, &str)],
    ) -> KilnProcess {
        Self::spawn(registry, data_dir, extra, None, Some(port)).await
    }

    async fn spawn(
        registry: &Registry,
        data_dir: &Path,
        extra: &[(&str, &str)],
        temp: Option<tempfile::TempDir>,
        port: Option<u16>,
    ) -> KilnProcess {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let port = port.unwrap_or_else(free_port);
        // Appended to: what every start of kiln over this data dir printed.
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("kiln.log"))
            .expect("kiln.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("serve");
        // Only what the test sets: nothing from the environment the tests run in.
        for (k, _) in std::env::vars() {
            if k.starts_with("KILN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("KILN_LISTEN", format!("127.0.0.1:{port}"))
            .env("KILN_DATA_DIR", data_dir)
            .env("KILN_REGISTRY", &registry.addr)
            .env("KILN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KILN_LOCAL_SOURCES", super::git_repos_root())
            .env("KILN_GIT_ALLOW", super::kiln::TEST_GIT_ALLOW)
            // Rate limits off, as in [`super::kiln::Kiln::start`]; `extra` may turn them on.
            .env("KILN_RATE_LIMIT_PER_MINUTE", "0")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("kiln.log"))
            .stderr(output);
        let child = cmd.spawn().expect("start the kiln binary");
        let running = KilnProcess {
            child,
            api: KilnApi::new(format!("http://127.0.0.1:{port}")),
            data_dir: data_dir.to_path_buf(),
            _temp_dir: temp,
        };
        let health = format!("{}/healthz", running.url);
        wait_until("kiln to answer", Duration::from_secs(60), || async {
            running.http.get(&health).send().await.is_ok()
        })
        .await;
        running
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's peak resident memory so far, in KiB (`VmHWM` in /proc/PID/status).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("kiln's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    /// What kiln printed so far (every start over this data dir).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("kiln.log")).unwrap_or_default()
    }

    /// Sends `signal` (`"KILL"`, `"TERM"`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Has the process exited? Its exit status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits (up to `timeout`) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut status = None;
        wait_until("kiln's process to exit", timeout, || {
            status = self.child.try_wait().expect("try_wait");
            std::future::ready(status.is_some())
        })
        .await;
        status.unwrap()
    }
}

impl Drop for KilnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
