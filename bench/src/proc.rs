//! Reading a process's memory and CPU time from `/proc` (Linux).

/// Resident set size in bytes (`VmRSS`), or the peak (`VmHWM`).
pub(crate) fn memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time and minor page faults of a process, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// User CPU seconds.
    pub(crate) user: f64,
    /// System CPU seconds.
    pub(crate) system: f64,
    /// Minor page faults (a page mapped for the first time).
    pub(crate) faults: u64,
}

impl Usage {
    pub(crate) fn of(pid: u32) -> Option<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // minflt, utime and stime are fields 10, 14 and 15 of the whole line.
        let faults: u64 = fields.get(7)?.parse().ok()?;
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(Usage {
            user: utime as f64 / 100.0,
            system: stime as f64 / 100.0,
            faults,
        })
    }

    /// The sum over every process named `name` (its `/proc/PID/comm`), as they are now: the
    /// PostgreSQL server's processes, say. A process that ended since an earlier reading takes its
    /// time with it, so this is for processes that stay (a connection pool's backends).
    pub(crate) fn of_all(name: &str) -> Usage {
        let mut sum = Usage::default();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return sum;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let named =
                std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|comm| comm.trim() == name);
            if let Some(usage) = named.then(|| Usage::of(pid)).flatten() {
                sum.user += usage.user;
                sum.system += usage.system;
                sum.faults += usage.faults;
            }
        }
        sum
    }

    /// This and `other` together.
    pub(crate) fn plus(&self, other: &Usage) -> Usage {
        Usage {
            user: self.user + other.user,
            system: self.system + other.system,
            faults: self.faults + other.faults,
        }
    }

    pub(crate) fn cpu(&self) -> f64 {
        self.user + self.system
    }

    /// What was used since `earlier`, per one of `n` operations.
    pub(crate) fn per(&self, earlier: &Usage, n: u32) -> Usage {
        let n = f64::from(n);
        Usage {
            user: (self.user - earlier.user) / n,
            system: (self.system - earlier.system) / n,
            faults: ((self.faults - earlier.faults) as f64 / n) as u64,
        }
    }
}

/// The CPU model, from `/proc/cpuinfo`.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// One reading of a [`Sampler`].
pub(crate) struct Sample {
    pub(crate) at: std::time::Instant,
    pub(crate) server: Usage,
    pub(crate) bench: Usage,
    /// The size of the server's write-ahead log, when it has one.
    pub(crate) wal: Option<u64>,
}

/// Reads a server's and this process's CPU time (and the server's WAL size) every 100 ms, from a
/// thread of its own, so that the readings go on when the load generator's runtime is busy.
pub(crate) struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub(crate) fn start(pid: u32, wal: Option<std::path::PathBuf>) -> Sampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            // Bounded: at most ten minutes of readings.
            for _ in 0..6000 {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                samples.push(Sample {
                    at: std::time::Instant::now(),
                    server: Usage::of(pid).unwrap_or_default(),
                    bench: Usage::of(std::process::id()).unwrap_or_default(),
                    wal: wal
                        .as_ref()
                        .and_then(|w| std::fs::metadata(w).ok())
                        .map(|m| m.len()),
                });
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            samples
        });
        Sampler { stop, thread }
    }

    pub(crate) fn stop(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
