//! The machine's counters, from /proc: load, CPU time, context switches,
//! memory, pressure stall information and the network interfaces. A file
//! that cannot be read leaves its part out (a kernel without PSI, say).

use std::fs;
use std::path::Path;

/// The aggregate `cpu` line of /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    /// system + irq + softirq, as bg_mon counts it.
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub fn total(&self) -> u64 {
        self.user + self.nice + self.system + self.idle + self.iowait + self.steal
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    pub uptime: f64,
    pub load: [f64; 3],
    pub cpu: CpuTimes,
    pub ctxt: u64,
    pub running: u64,
    pub blocked: u64,
    pub memory: Memory,
    pub pressure: Option<Pressure>,
    pub net: Vec<(String, NetCounters)>,
}

/// /proc/meminfo, in kB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Memory {
    pub total: u64,
    pub free: u64,
    pub buffers: u64,
    /// Cached + SReclaimable.
    pub cached: u64,
    pub dirty: u64,
}

/// One PSI line: avg10, avg60, avg300 (percent) and the total stall (µs).
pub type Stall = (f64, f64, f64, u64);

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub cpu: Stall,
    pub memory: (Stall, Stall),
    pub io: (Stall, Stall),
}

/// /proc/net/dev's counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_drop: u64,
    pub tx_fifo: u64,
    pub collisions: u64,
    pub tx_carrier: u64,
    /// Link speed in Mbit/s and full duplex, when the driver says.
    pub speed: Option<(u64, bool)>,
}

pub fn read(proc: &Path) -> Host {
    let mut host = Host::default();
    if let Some(uptime) = text(&proc.join("uptime")).and_then(|t| first_number(&t)) {
        host.uptime = uptime;
    }
    if let Some(loadavg) = text(&proc.join("loadavg")) {
        for (slot, value) in host.load.iter_mut().zip(loadavg.split_whitespace()) {
            *slot = value.parse().unwrap_or(0.0);
        }
    }
    if let Some(stat) = text(&proc.join("stat")) {
        read_stat(&stat, &mut host);
    }
    if let Some(meminfo) = text(&proc.join("meminfo")) {
        host.memory = memory(&meminfo);
    }
    host.pressure = pressure(&proc.join("pressure"));
    if let Some(dev) = text(&proc.join("net/dev")) {
        host.net = net(&dev, Path::new("/sys/class/net"));
    }
    host
}

pub(crate) fn text(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn first_number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

fn read_stat(stat: &str, host: &mut Host) {
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let name = fields.next().unwrap_or_default();
        let numbers: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
        let at = |i: usize| numbers.get(i).copied().unwrap_or(0);
        match name {
            "cpu" => {
                host.cpu = CpuTimes {
                    user: at(0),
                    nice: at(1),
                    system: at(2) + at(5) + at(6),
                    idle: at(3),
                    iowait: at(4),
                    steal: at(7),
                }
            }
            "ctxt" => host.ctxt = at(0),
            "procs_running" => host.running = at(0),
            "procs_blocked" => host.blocked = at(0),
            _ => {}
        }
    }
}

fn memory(meminfo: &str) -> Memory {
    let mut memory = Memory::default();
    let mut reclaimable = 0;
    for line in meminfo.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let value = first_number(rest).unwrap_or(0.0) as u64;
        match key {
            "MemTotal" => memory.total = value,
            "MemFree" => memory.free = value,
            "Buffers" => memory.buffers = value,
            "Cached" => memory.cached = value,
            "SReclaimable" => reclaimable = value,
            "Dirty" => memory.dirty = value,
            _ => {}
        }
    }
    memory.cached += reclaimable;
    memory
}

/// `/proc/pressure/{cpu,memory,io}`: the cgroup's own when the container
/// has a cgroup namespace, the host's otherwise.
fn pressure(dir: &Path) -> Option<Pressure> {
    let read = |name: &str| text(&dir.join(name)).map(|t| stall_lines(&t));
    let cpu = read("cpu")?;
    let memory = read("memory").unwrap_or_default();
    let io = read("io").unwrap_or_default();
    Some(Pressure {
        cpu: cpu.0,
        memory,
        io,
    })
}

/// The `some` and `full` lines of a PSI file.
pub(crate) fn stall_lines(text: &str) -> (Stall, Stall) {
    let mut some = Stall::default();
    let mut full = Stall::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let target = match fields.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => target.0 = value.parse().unwrap_or(0.0),
                "avg60" => target.1 = value.parse().unwrap_or(0.0),
                "avg300" => target.2 = value.parse().unwrap_or(0.0),
                "total" => target.3 = value.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    (some, full)
}

/// Interfaces that ever carried a packet, in /proc/net/dev's order.
fn net(dev: &str, sys: &Path) -> Vec<(String, NetCounters)> {
    dev.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim().to_owned();
            let n: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            if n.len() < 16 || n[1] + n[9] == 0 {
                return None;
            }
            let speed = text(&sys.join(&name).join("speed"))
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|s| *s > 0)
                .map(|s| {
                    let duplex = text(&sys.join(&name).join("duplex"));
                    (s as u64, duplex.is_some_and(|d| d.trim() == "full"))
                });
            Some((
                name,
                NetCounters {
                    rx_bytes: n[0],
                    rx_packets: n[1],
                    rx_errors: n[2],
                    rx_drop: n[3],
                    tx_bytes: n[8],
                    tx_packets: n[9],
                    tx_errors: n[10],
                    tx_drop: n[11],
                    tx_fifo: n[12],
                    collisions: n[13],
                    tx_carrier: n[14],
                    speed,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_meminfo() {
        let mut host = Host::default();
        read_stat(
            "cpu  10 1 5 100 2 3 4 6 0 0\ncpu0 1 1 1 1 1 1 1 1\nctxt 99\nprocs_running 3\nprocs_blocked 1\n",
            &mut host,
        );
        assert_eq!(
            host.cpu,
            CpuTimes {
                user: 10,
                nice: 1,
                system: 12,
                idle: 100,
                iowait: 2,
                steal: 6
            }
        );
        assert_eq!((host.ctxt, host.running, host.blocked), (99, 3, 1));
        let m = memory(
            "MemTotal: 1000 kB\nMemFree: 100 kB\nCached: 300 kB\nSReclaimable: 20 kB\nDirty: 7 kB\n",
        );
        assert_eq!((m.total, m.free, m.cached, m.dirty), (1000, 100, 320, 7));
    }

    #[test]
    fn psi_lines() {
        let (some, full) = stall_lines(
            "some avg10=1.50 avg60=0.20 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=56\n",
        );
        assert_eq!(some, (1.5, 0.2, 0.0, 1234));
        assert_eq!(full.3, 56);
    }

    #[test]
    fn interfaces_without_traffic_are_left_out() {
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n  eth9: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let found = net(dev, Path::new("/nonexistent"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "lo");
        assert_eq!(found[0].1.rx_bytes, 100);
    }
}
