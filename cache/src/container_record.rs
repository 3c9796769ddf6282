//! Containers' records for `kiln run`, `ps`, `logs`, `exec`, `stop`, `rm` and `inspect`: one
//! directory per container under `ROOT/containers/ID/` with `config.json` (the
//! [`ContainerRecord`]) and the container's log, `ID-json.log` (docker's json-file format).
//!
//! # Overview
//!
//! 1. [`ContainerRecords::create`] gives a new container a 64-hex ID and reserves its name
//!    under `containers/.lock` (an exclusive `flock`), so two runs never take one name.
//! 2. Every change is a read-modify-write under the container's own `lock` file
//!    ([`ContainerRecords::update`]), written to a temporary file and renamed into place, so a
//!    reader never sees half a record and the supervisor's updates and `kiln stop`'s do not
//!    overwrite each other.
//! 3. A record says which process keeps the container ([`ContainerState::keeper`]); when that
//!    process is gone (killed with SIGKILL) while the record still says running,
//!    [`ContainerRecords::list`] and [`ContainerRecords::get`] mark it exited, as docker shows
//!    containers whose daemon died.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::lease::Owner;

/// docker's time for "never": `0001-01-01T00:00:00Z`.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The exit code recorded for a container whose keeper died without recording one (docker
/// shows such containers as `Exited (255)` after its daemon died).
pub const KEEPER_DIED_EXIT_CODE: i32 = 255;

/// A container's lifecycle state, with docker's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, not started yet.
    #[default]
    Created,
    /// Its process runs.
    Running,
    /// Waiting to be started again by its restart policy.
    Restarting,
    /// Its process ended.
    Exited,
    /// Could not be cleaned up.
    Dead,
}

impl Status {
    /// docker's word for it (`running`, `exited`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
            Self::Dead => "dead",
        }
    }
}

/// docker's `--restart` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "Name", content = "MaximumRetryCount")]
pub enum RestartPolicy {
    /// Never restart (`no`).
    #[default]
    #[serde(rename = "no")]
    No,
    /// Restart after a non-zero exit, at most this many times (0: without limit).
    #[serde(rename = "on-failure")]
    OnFailure(u32),
    /// Always restart, unless stopped by `kiln stop`.
    #[serde(rename = "always")]
    Always,
    /// As `always`, docker's `unless-stopped` (the same without a daemon restart).
    #[serde(rename = "unless-stopped")]
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses `--restart`: `no`, `on-failure[:N]`, `always`, `unless-stopped`, with docker's
    /// error wording.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = || Error::RestartPolicy {
            value: text.to_owned(),
        };
        let (name, count) = match text.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (text, None),
        };
        match (name, count) {
            ("no" | "", None) => Ok(Self::No),
            ("always", None) => Ok(Self::Always),
            ("unless-stopped", None) => Ok(Self::UnlessStopped),
            ("on-failure", None) => Ok(Self::OnFailure(0)),
            ("on-failure", Some(count)) => count.parse().map(Self::OnFailure).map_err(|_| bad()),
            ("no" | "always" | "unless-stopped", Some(_)) => Err(Error::RestartPolicyCount {
                name: name.to_owned(),
            }),
            _ => Err(bad()),
        }
    }

    /// Whether a container that ended with `exit_code` after `restarts` restarts goes again
    /// (never after `kiln stop`).
    pub fn restarts(self, exit_code: i32, restarts: u32, stopped: bool) -> bool {
        if stopped {
            return false;
        }
        match self {
            Self::No => false,
            Self::Always | Self::UnlessStopped => true,
            Self::OnFailure(max) => exit_code != 0 && (max == 0 || restarts < max),
        }
    }
}

/// The image's `HEALTHCHECK` (or `--health-*`), durations in nanoseconds as in image configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["CMD", args...]`, `["CMD-SHELL", command]` or `["NONE"]`.
    #[serde(default)]
    pub test: Vec<String>,
    /// Time between checks (0: 30 s).
    #[serde(default)]
    pub interval: u64,
    /// Time a check may take (0: 30 s).
    #[serde(default)]
    pub timeout: u64,
    /// Time to start, whose failures do not count (0: none).
    #[serde(default)]
    pub start_period: u64,
    /// Failures in a row that make the container unhealthy (0: 3).
    #[serde(default)]
    pub retries: u32,
}

/// One health check's result, as docker's `State.Health.Log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthLog {
    /// When it started (RFC 3339).
    pub start: String,
    /// When it ended (RFC 3339).
    pub end: String,
    /// Its exit code (0 healthy, else unhealthy).
    pub exit_code: i32,
    /// Its output, at most 4 KiB.
    pub output: String,
}

/// `State.Health`: `starting`, `healthy` or `unhealthy`, the failures in a row, the last
/// checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Failed checks in a row.
    pub failing_streak: u32,
    /// The last five checks.
    pub log: Vec<HealthLog>,
}

/// What the container runs and how it was configured (docker's `Config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// The image as named on the command line.
    pub image: String,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// The process's environment.
    pub env: Vec<String>,
    /// The working directory.
    pub working_dir: String,
    /// The user.
    pub user: String,
    /// The image's labels.
    pub labels: BTreeMap<String, String>,
    /// The signal `kiln stop` sends first (`SIGTERM` when empty).
    pub stop_signal: String,
    /// The health check, if any.
    pub healthcheck: Option<HealthConfig>,
    /// Whether it has a terminal.
    pub tty: bool,
}

/// Limits and policies (docker's `HostConfig`, the fields that apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `--restart`.
    pub restart_policy: RestartPolicy,
    /// `-m` in bytes (0: none).
    pub memory: u64,
    /// `--cpus` in billionths of a CPU (0: none).
    pub nano_cpus: u64,
    /// `--pids-limit` (none: unlimited).
    pub pids_limit: Option<u64>,
    /// `--read-only`.
    pub readonly_rootfs: bool,
    /// `--privileged`.
    pub privileged: bool,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `-v`, as given.
    pub binds: Vec<String>,
    /// `--network`.
    pub network_mode: String,
    /// `--rm`.
    pub auto_remove: bool,
}

/// A published port, `CONTAINER/PROTO -> HOST_IP:HOST_PORT` (filled by the network setup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// The container's port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host's address (`0.0.0.0` for all).
    pub host_ip: String,
    /// The host's port.
    pub host_port: u16,
}

/// The container's network (docker's `NetworkSettings`; empty until the network setup fills
/// it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    /// Its address on its network, if any.
    pub ip_address: String,
    /// Its network's gateway, if any.
    pub gateway: String,
    /// Its MAC address, if any.
    pub mac_address: String,
    /// The published ports.
    pub ports: Vec<PortBinding>,
}

/// The process that keeps a container and the container's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// Where it is in its life.
    pub status: Status,
    /// The container's process (its PID 1) on the host, 0 when not running.
    pub pid: u32,
    /// The kiln process that runs it (the foreground `kiln run` or the detached supervisor).
    pub keeper: Option<Owner>,
    /// The last exit code.
    pub exit_code: i32,
    /// Why it could not start, if so.
    pub error: String,
    /// When it last started.
    pub started_at: String,
    /// When it last ended.
    pub finished_at: String,
    /// Whether the kernel's OOM killer ended it.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Its health, with a health check.
    pub health: Option<Health>,
}

/// A container's record (`ROOT/containers/ID/config.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// The image's ID (its config digest).
    pub image: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// The program.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// What it runs.
    pub config: ContainerConfig,
    /// Its limits and policies.
    pub host_config: HostConfig,
    /// Its state.
    pub state: ContainerState,
    /// How often its restart policy restarted it.
    pub restart_count: u32,
    /// Stopped by `kiln stop` or `kiln kill`: the restart policy leaves it stopped.
    pub stopped_by_user: bool,
    /// Whether it runs detached (`-d`), under a supervisor.
    pub detached: bool,
    /// The `kiln run` arguments after `run`, which the supervisor runs again in the foreground.
    pub run_args: Vec<String>,
    /// Its network.
    pub network_settings: NetworkSettings,
}

impl ContainerRecord {
    /// A record for a new container, `created` now; the caller fills the rest.
    pub fn new(name: &str) -> Self {
        Self {
            id: new_id(),
            name: name.to_owned(),
            image: String::new(),
            created: now_rfc3339(),
            path: String::new(),
            args: Vec::new(),
            config: ContainerConfig::default(),
            host_config: HostConfig::default(),
            state: ContainerState {
                started_at: ZERO_TIME.to_owned(),
                finished_at: ZERO_TIME.to_owned(),
                ..ContainerState::default()
            },
            restart_count: 0,
            stopped_by_user: false,
            detached: false,
            run_args: Vec::new(),
            network_settings: NetworkSettings::default(),
        }
    }

    /// Whether its process runs (or waits to restart).
    pub fn is_running(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Restarting)
    }
}

/// The current time in RFC 3339 with nanoseconds, as docker writes its times.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// A fresh 64-hex-digit container ID.
fn new_id() -> String {
    use sha2::Digest as _;
    let mut seed = [0u8; 32];
    if let Ok(mut file) = fs_err::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut file, &mut seed);
    }
    let mut hasher = sha2::Sha256::new();
    hasher.update(seed);
    hasher.update(std::process::id().to_ne_bytes());
    hasher.update(now_rfc3339().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The containers' records under a store root.
#[derive(Debug, Clone)]
pub struct ContainerRecords {
    dir: PathBuf,
}

impl ContainerRecords {
    /// The records under `root/containers`.
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("containers"),
        }
    }

    /// The directory of the container `id` (its record, lock and log).
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The container's log (docker's json-file format, one JSON object a line).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(format!("{id}-json.log"))
    }

    fn lock(path: &Path) -> Result<Flock<OwnedFd>, Error> {
        let file = crate::meta::open_lock_file(path)?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| Error::Lock {
            path: path.to_owned(),
            source: errno,
        })
    }

    /// Stores `record` as a new container: its name must be unique (docker's conflict error
    /// otherwise).
    pub fn create(&self, record: &ContainerRecord) -> Result<(), Error> {
        check_name(&record.name)?;
        fs_err::create_dir_all(&self.dir)?;
        let _guard = Self::lock(&self.dir.join(".lock"))?;
        if let Some(other) = self.read_all()?.into_iter().find(|r| r.name == record.name) {
            return Err(Error::ContainerNameInUse {
                name: record.name.clone(),
                id: other.id,
            });
        }
        fs_err::create_dir(self.dir(&record.id))?;
        self.write(record)
    }

    fn write(&self, record: &ContainerRecord) -> Result<(), Error> {
        let dir = self.dir(&record.id);
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::json(format!("container {}", record.id), e))?;
        let temporary = dir.join("config.json.new");
        fs_err::write(&temporary, bytes)?;
        fs_err::rename(&temporary, dir.join("config.json"))?;
        Ok(())
    }

    fn read(&self, id: &str) -> Result<ContainerRecord, Error> {
        let path = self.dir(id).join("config.json");
        let bytes = fs_err::read(&path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => Error::NoSuchContainer {
                name: id.to_owned(),
            },
            _ => err.into(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::json(path.display().to_string(), e))
    }

    fn read_all(&self) -> Result<Vec<ContainerRecord>, Error> {
        let Ok(entries) = fs_err::read_dir(&self.dir) else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if id.starts_with('.') {
                continue;
            }
            match self.read(id) {
                Ok(record) => records.push(record),
                // Being made or removed by another process.
                Err(Error::NoSuchContainer { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(records)
    }

    /// Changes the record of `id` under its lock and returns the new record.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, Error> {
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::NoSuchContainer {
                name: id.to_owned(),
            });
        }
        let _guard = Self::lock(&dir.join("lock"))?;
        let mut record = self.read(id)?;
        change(&mut record);
        self.write(&record)?;
        Ok(record)
    }

    /// Marks a record exited whose keeper is gone while it still says running.
    fn settle(&self, record: ContainerRecord) -> Result<ContainerRecord, Error> {
        let keeper_gone = record.is_running()
            || record.state.status == Status::Created && record.state.keeper.is_some();
        if !keeper_gone || record.state.keeper.is_some_and(|k| k.is_alive()) {
            return Ok(record);
        }
        self.update(&record.id.clone(), |r| {
            if r.state.keeper.is_some_and(|k| !k.is_alive()) {
                tracing::debug!(id = %r.id, "the container's keeper is gone");
                r.state.status = Status::Exited;
                r.state.pid = 0;
                r.state.keeper = None;
                r.state.exit_code = KEEPER_DIED_EXIT_CODE;
                r.state.finished_at = now_rfc3339();
                if let Some(health) = &mut r.state.health {
                    health.status = "unhealthy".to_owned();
                }
            }
        })
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, Error> {
        let mut records = self
            .read_all()?
            .into_iter()
            .map(|r| self.settle(r))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(records)
    }

    /// The container named `reference`: its name, its ID or a unique beginning of its ID, as
    /// docker finds containers.
    pub fn get(&self, reference: &str) -> Result<ContainerRecord, Error> {
        let missing = || Error::NoSuchContainer {
            name: reference.to_owned(),
        };
        if reference.is_empty() {
            return Err(missing());
        }
        let records = self.read_all()?;
        let found = records
            .iter()
            .find(|r| r.id == reference || r.name == reference.trim_start_matches('/'))
            .cloned();
        let found = match found {
            Some(found) => found,
            None => {
                let mut matches = records.into_iter().filter(|r| r.id.starts_with(reference));
                let first = matches.next().ok_or_else(missing)?;
                if matches.next().is_some() {
                    return Err(Error::AmbiguousContainer {
                        reference: reference.to_owned(),
                    });
                }
                first
            }
        };
        self.settle(found)
    }

    /// Removes the record and log of `id`.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        let dir = self.dir(id);
        if dir.is_dir() {
            fs_err::remove_dir_all(dir)?;
        }
        Ok(())
    }
}

/// docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn check_name(name: &str) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() >= 2
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidContainerName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_like_docker() {
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("always").unwrap(),
            RestartPolicy::Always
        );
        assert_eq!(
            RestartPolicy::parse("on-failure").unwrap(),
            RestartPolicy::OnFailure(0)
        );
        assert_eq!(
            RestartPolicy::parse("on-failure:2").unwrap(),
            RestartPolicy::OnFailure(2)
        );
        assert_eq!(
            RestartPolicy::parse("unless-stopped").unwrap(),
            RestartPolicy::UnlessStopped
        );
        assert_eq!(
            RestartPolicy::parse("sometimes").unwrap_err().to_string(),
            "invalid restart policy format: sometimes"
        );
        assert_eq!(
            RestartPolicy::parse("on-failure:x")
                .unwrap_err()
                .to_string(),
            "invalid restart policy format: on-failure:x"
        );
        assert_eq!(
            RestartPolicy::parse("always:3").unwrap_err().to_string(),
            "maximum retry count cannot be used with restart policy 'always'"
        );
    }

    #[test]
    fn restart_policies_decide_like_docker() {
        let on_failure = RestartPolicy::OnFailure(2);
        assert!(on_failure.restarts(1, 0, false));
        assert!(on_failure.restarts(1, 1, false));
        assert!(!on_failure.restarts(1, 2, false));
        assert!(!on_failure.restarts(0, 0, false));
        assert!(RestartPolicy::OnFailure(0).restarts(3, 100, false));
        assert!(RestartPolicy::Always.restarts(0, 9, false));
        assert!(!RestartPolicy::Always.restarts(0, 0, true));
        assert!(!RestartPolicy::No.restarts(1, 0, false));
    }

    #[test]
    fn names_are_unique_and_found_by_name_or_id() {
        let root = tempfile::tempdir().unwrap();
        let records = ContainerRecords::new(root.path());
        let web = ContainerRecord::new("web");
        assert_eq!(web.id.len(), 64);
        assert!(web.id.bytes().all(|b| b.is_ascii_hexdigit()));
        records.create(&web).unwrap();
        let err = records.create(&ContainerRecord::new("web")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Conflict. The container name \"/web\" is already in use by container \"{}\". \
                 You have to remove (or rename) that container to be able to reuse that name.",
                web.id
            )
        );
        assert!(records.create(&ContainerRecord::new("-x")).is_err());
        assert!(records.create(&ContainerRecord::new("a/b")).is_err());
        assert_eq!(records.get("web").unwrap().id, web.id);
        assert_eq!(records.get("/web").unwrap().id, web.id);
        assert_eq!(records.get(&web.id[..12]).unwrap().name, "web");
        assert_eq!(
            records.get("nope").unwrap_err().to_string(),
            "No such container: nope"
        );
        let record = records
            .update(&web.id, |r| {
                r.network_settings.ip_address = "10.88.0.2".into()
            })
            .unwrap();
        assert_eq!(
            records.get("web").unwrap().network_settings,
            record.network_settings
        );
        records.remove(&web.id).unwrap();
        assert!(records.list().unwrap().is_empty());
    }

    #[test]
    fn a_dead_keeper_leaves_an_exited_container() {
        let root = tempfile::tempdir().unwrap();
        let records = ContainerRecords::new(root.path());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut record = ContainerRecord::new("gone");
        record.state.status = Status::Running;
        record.state.pid = 1;
        record.state.keeper = Some(Owner { pid, start: 1 });
        records.create(&record).unwrap();
        let mut alive = ContainerRecord::new("alive");
        alive.state.status = Status::Running;
        alive.state.keeper = Some(Owner::current());
        records.create(&alive).unwrap();
        let listed = records.list().unwrap();
        let gone = listed.iter().find(|r| r.name == "gone").unwrap();
        assert_eq!(gone.state.status, Status::Exited);
        assert_eq!(gone.state.exit_code, KEEPER_DIED_EXIT_CODE);
        assert_eq!(gone.state.pid, 0);
        let alive = listed.iter().find(|r| r.name == "alive").unwrap();
        assert_eq!(alive.state.status, Status::Running);
    }
}
