//! A real PostgreSQL for tests: a cluster of its own in a temporary directory, on a free
//! loopback port, stopped (and removed) when dropped. PostgreSQL refuses to run as root, so as
//! root it runs as the `postgres` user. Where no PostgreSQL is installed, `start` says so
//! loudly and the caller skips; under CI (`CI` set) that is a failure instead.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
    next_db: std::sync::atomic::AtomicU32,
}

fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PgCluster {
    /// A cluster for tests: fsync off, since a test's data need not survive the machine.
    pub fn start() -> Option<PgCluster> {
        PgCluster::start_with(false)
    }

    /// A cluster that writes as a production one does (fsync on): for benchmarks.
    pub fn start_durable() -> Option<PgCluster> {
        PgCluster::start_with(true)
    }

    fn start_with(durable: bool) -> Option<PgCluster> {
        let Some(bin) = bin_dir() else {
            let how = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql \
                       (`cargo xtask deps` does)";
            if std::env::var_os("CI").is_some() {
                panic!("{how}");
            }
            eprintln!("\n*** SKIPPED: {how} ***\n");
            return None;
        };
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("ringfence-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        if as_postgres {
            // Every directory up to the cluster's must be open to `postgres`; this one is its own.
            let ok = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status().is_ok_and(|s| s.success());
            assert!(ok, "chown postgres {}", dir.display());
        }
        let mut pg = PgCluster { dir, bin, port: free_port(), as_postgres, next_db: Default::default() };
        pg.run("initdb", &["-D", &pg.data(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        let opts = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=50",
            pg.dir_str(),
            pg.port,
            if durable { "on" } else { "off" }
        );
        let log = format!("{}/log", pg.dir_str());
        let mut tries = 0;
        loop {
            let ok = pg.try_run("pg_ctl", &["-D", &pg.data(), "-l", &log, "-w", "-t", "30", "-o", &opts, "start"]);
            if ok {
                break;
            }
            tries += 1;
            assert!(tries < 3, "pg_ctl start failed; its log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            // The port was taken in between: another.
            pg.port = free_port();
        }
        Some(pg)
    }

    fn dir_str(&self) -> String {
        self.dir.display().to_string()
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir_str())
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).current_dir(&self.dir);
        c
    }

    fn try_run(&self, program: &str, args: &[&str]) -> bool {
        self.command(program, args).status().is_ok_and(|s| s.success())
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program, args).stderr(Stdio::piped()).output().expect(program);
        assert!(out.status.success(), "{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The postmaster's process id, from its pid file.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(format!("{}/postmaster.pid", self.data())).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The URL of a new, empty database.
    pub fn fresh_db(&self) -> String {
        let n = self.next_db.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("t{n}");
        self.run("createdb", &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", &name]);
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL on database `db` through `psql`, for what a test does behind the store's back.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-tAc", sql]);
        let out = c.output().expect("psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.try_run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
