//! Resident memory of the release `saas serve` binary, idle and under load.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context;

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line =
        status.lines().find(|l| l.starts_with(field)).with_context(|| format!("{field} in /proc/{pid}/status"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

/// CPU time (user + system) used so far by this process's threads whose name starts with
/// `name`.
pub(crate) fn thread_cpu(name: &str) -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let path = task.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim().starts_with(name)) {
            ticks += stat_ticks(&path.join("stat"));
        }
    }
    ticks_to_time(ticks)
}

/// CPU time (user + system) used so far by the calling thread.
pub(crate) fn this_thread_cpu() -> Duration {
    ticks_to_time(stat_ticks(std::path::Path::new("/proc/thread-self/stat")))
}

/// User and system clock ticks of the task whose `stat` file is `path` (0 if unreadable).
fn stat_ticks(path: &std::path::Path) -> u64 {
    let Ok(stat) = std::fs::read_to_string(path) else { return 0 };
    // Fields after the `(comm)`: state is field 3; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum()
}

fn ticks_to_time(ticks: u64) -> Duration {
    // Clock ticks are 1/100 s on Linux.
    Duration::from_millis(ticks * 10)
}

pub(crate) async fn measure(duration: Duration, connections: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?.with_file_name("saas");
    anyhow::ensure!(exe.exists(), "{} not found: run `cargo build --release -p saas-server` first", exe.display());
    let data = tempfile::tempdir()?;
    let mut child = Command::new(&exe)
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("SAAS_LOG_LEVEL", "warn,saas_server=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().context("saas exited before listening")??;
        let json: serde_json::Value = serde_json::from_str(&line)?;
        if json["fields"]["message"] == "listening" {
            break json["fields"]["url"].as_str().context("url")?.trim_start_matches("http://").parse()?;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = status_kib(pid, "VmRSS:")?;
    let report = super::load::run(addr, &super::load::Target::get("/health/ready"), connections, duration).await?;
    let loaded = status_kib(pid, "VmRSS:")?;
    let peak = status_kib(pid, "VmHWM:")?;
    println!("idle RSS        {:>7.1} MB (goal < 50 MB)", idle as f64 / 1024.0);
    println!(
        "loaded RSS      {:>7.1} MB after {:.0} req/s on /health/ready ({} connections), peak {:.1} MB",
        loaded as f64 / 1024.0,
        report.rps(),
        connections,
        peak as f64 / 1024.0
    );
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    Ok(())
}
