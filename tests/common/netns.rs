//! A real (virtual) link for fault tests: two network namespaces of the test's own joined by
//! a veth pair, with random loss (nftables), a rate limit (tc tbf), a cut (`ip link set
//! down`) and a vanished peer. Everything is removed when dropped.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The server's address on every link (each link is its own pair of namespaces).
pub const SERVER_IP: &str = "10.203.0.1";
/// The client's address on every link.
pub const CLIENT_IP: &str = "10.203.0.2";

/// Links made by this process so far: names stay unique when tests run in parallel.
static LINKS: AtomicU32 = AtomicU32::new(0);

/// A network namespace removed (with its links) when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn add(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        Netns(name)
    }

    /// Runs `args` in this namespace; panics with its stderr if it fails.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.0];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A command that runs `program` in this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `ip ARGS`; panics with its stderr if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether namespaces can be made here; says why `test` is skipped if not.
pub fn can_make_namespaces(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !(root && ip) {
        eprintln!(
            "SKIPPED {test}: needs root and iproute2's `ip netns` to make network namespaces \
             (CI runs as root and installs iproute2)"
        );
    }
    root && ip
}

/// Whether nftables' `nft` runs here; says why `test` is skipped if not.
pub fn can_drop_packets(test: &str) -> bool {
    let nft = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !nft {
        eprintln!(
            "SKIPPED {test}: needs nftables' `nft` for random loss (apt-get install nftables)"
        );
    }
    nft
}

/// Runs `f` on a thread that has entered network namespace `ns` (sockets it opens live
/// there, and stay there when handed to other threads); returns what `f` returns.
pub fn in_namespace<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.0);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: setns on a namespace file we hold open; it changes this thread only.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the namespace thread")
}

/// Two namespaces joined by a veth pair: the server end at [`SERVER_IP`], the client end at
/// [`CLIENT_IP`].
pub struct Link {
    pub server: Netns,
    pub client: Netns,
    pub server_if: String,
    pub client_if: String,
}

impl Link {
    /// A fresh pair of namespaces and their veth, both ends up.
    pub fn new() -> Link {
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let server = Netns::add(format!("sockit-s-{pid}-{n}"));
        let client = Netns::add(format!("sockit-c-{pid}-{n}"));
        // Interface names are at most 15 bytes.
        let (server_if, client_if) = (format!("s{pid}x{n}"), format!("c{pid}x{n}"));
        ip(&[
            "link", "add", &server_if, "netns", &server.0, "type", "veth", "peer", "name",
            &client_if, "netns", &client.0,
        ]);
        for (ns, ifname, addr) in [
            (&server, &server_if, SERVER_IP),
            (&client, &client_if, CLIENT_IP),
        ] {
            ns.exec(&["ip", "addr", "add", &format!("{addr}/30"), "dev", ifname]);
            ns.exec(&["ip", "link", "set", ifname, "up"]);
            ns.exec(&["ip", "link", "set", "lo", "up"]);
        }
        Link {
            server,
            client,
            server_if,
            client_if,
        }
    }

    /// Drops `percent` % of the packets arriving at each end, at random (nftables' numgen).
    /// Segmentation offload is turned off first (ethtool), so a packet is one MTU-sized
    /// segment as on a wire, not a 64 KiB super-packet that takes 40 segments with it.
    pub fn lose(&self, percent: u32) {
        for (ns, ifname) in [
            (&self.server, &self.server_if),
            (&self.client, &self.client_if),
        ] {
            let off = ns
                .command("ethtool")
                .args(["-K", ifname, "tso", "off", "gso", "off", "gro", "off"])
                .status()
                .is_ok_and(|s| s.success());
            if !off {
                eprintln!(
                    "note: ethtool could not turn segmentation offload off on {ifname}: the loss \
                     applies to super-packets (apt-get install ethtool)"
                );
            }
        }
        let percent = percent.to_string();
        for ns in [&self.server, &self.client] {
            ns.exec(&["nft", "add", "table", "inet", "sockit"]);
            ns.exec(&[
                "nft",
                "add",
                "chain",
                "inet",
                "sockit",
                "in",
                "{ type filter hook input priority 0 ; }",
            ]);
            ns.exec(&[
                "nft", "add", "rule", "inet", "sockit", "in", "numgen", "random", "mod", "100",
                "lt", &percent, "counter", "drop",
            ]);
        }
    }

    /// Packets nftables dropped at both ends so far (proof that the loss was real).
    pub fn dropped(&self) -> u64 {
        [&self.server, &self.client]
            .iter()
            .map(|ns| {
                let out = ns
                    .command("nft")
                    .args(["list", "chain", "inet", "sockit", "in"])
                    .output();
                let text = out
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                text.split("packets ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Limits each end's sending rate, e.g. `"200mbit"`: with tc netem where the kernel has it
    /// (`netem` true), adding 25 ms each way (50 ms RTT) and 0.5 % reordering; else with tc tbf,
    /// the rate alone.
    pub fn limit_rate(&self, rate: &str, netem: bool) {
        for (ns, ifname) in [
            (&self.server, &self.server_if),
            (&self.client, &self.client_if),
        ] {
            let mut args = vec!["tc", "qdisc", "add", "dev", ifname, "root"];
            if netem {
                args.extend([
                    "netem", "delay", "25ms", "reorder", "0.5%", "50%", "rate", rate,
                ]);
            } else {
                args.extend(["tbf", "rate", rate, "burst", "256kb", "latency", "50ms"]);
            }
            ns.exec(&args);
        }
    }

    /// TCP connections a process in the server's namespace still holds open (established,
    /// half-closed or closing; not the listeners, and not sockets the kernel finishes alone
    /// after their process let go): 0 once every session the server had is freed.
    pub fn server_connections(&self) -> usize {
        let out = self
            .server
            .command("ss")
            .args(["-tnpH", "state", "connected", "exclude", "time-wait"])
            .output()
            .expect("run ss");
        assert!(
            out.status.success(),
            "ss: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("users:("))
            .count()
    }

    /// Takes the client's end down (the cable pulled) or brings it back up.
    pub fn set_client_up(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        self.client
            .exec(&["ip", "link", "set", &self.client_if, state]);
    }

    /// The client vanishes (a pulled cable, a suspended laptop): its end goes down, and nothing
    /// it sends, not even a FIN or RST, reaches the server again; the server's own end stays.
    ///
    /// Deleting the veth would be the wrong model: a pair dies whole, so the server would lose
    /// its own interface and route, its keepalive probes would fail locally (which the kernel
    /// does not count as unanswered) and a quiet connection would never be given up on.
    pub fn vanish_client(&self) {
        self.set_client_up(false);
    }

    /// Whether tc netem (delay, reordering) can be added here: probes on the server's end and
    /// removes it again. Says why the delay and reordering part of `test` is skipped if not.
    pub fn netem_available(&self, test: &str) -> bool {
        let added = self
            .server
            .command("tc")
            .args([
                "qdisc",
                "add",
                "dev",
                &self.server_if,
                "root",
                "netem",
                "delay",
                "1ms",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if added {
            let _ = self
                .server
                .command("tc")
                .args(["qdisc", "del", "dev", &self.server_if, "root"])
                .status();
        } else {
            eprintln!(
                "SKIPPED {test} (delay and reordering part): this kernel has no sch_netem \
                 (`tc qdisc add … netem` says \"Specified qdisc kind is unknown\"); loss, rate \
                 limit, cut and vanish are still tested"
            );
        }
        added
    }
}
