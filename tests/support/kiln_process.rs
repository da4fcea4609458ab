//! The real `kiln` binary as a child process, for what only a process of its own can show: its
//! peak memory (`VmHWM`), a kill. The API client is the same [`KilnApi`] as the in-process
//! [`super::kiln::Kiln`]'s.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::kiln::{ADMIN_TOKEN, KilnApi};
use super::{Registry, free_port, wait_until};

pub struct KilnProcess {
    child: Child,
    pub api: KilnApi,
    pub data_dir: tempfile::TempDir,
}

impl std::ops::Deref for KilnProcess {
    type Target = KilnApi;
    fn deref(&self) -> &KilnApi {
        &self.api
    }
}

impl KilnProcess {
    /// Starts `kiln serve` pushing to `registry`, with the defaults of [`super::kiln::Kiln::start`]
    /// and `extra` KILN_* variables on top; its output goes to `kiln.log` in its data dir. Returns
    /// once it answers `/healthz`.
    pub async fn start(registry: &Registry, extra: &[(&str, &str)]) -> KilnProcess {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let output = File::create(data_dir.path().join("kiln.log")).expect("kiln.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("serve")
            .env("KILN_LISTEN", format!("127.0.0.1:{port}"))
            .env("KILN_DATA_DIR", data_dir.path())
            .env("KILN_REGISTRY", &registry.addr)
            .env("KILN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KILN_LOCAL_SOURCES", super::git_repos_root())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("kiln.log"))
            .stderr(output);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the kiln binary");
        let running = KilnProcess {
            child,
            api: KilnApi::new(format!("http://127.0.0.1:{port}")),
            data_dir,
        };
        let health = format!("{}/healthz", running.url);
        wait_until("kiln to answer", Duration::from_secs(30), || async {
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

    /// What kiln printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("kiln.log")).unwrap_or_default()
    }
}

impl Drop for KilnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
