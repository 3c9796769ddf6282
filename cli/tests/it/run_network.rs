//! `kiln run`'s networks (issue 21): the default bridge with published ports, names between
//! containers, `container:NAME`, `--add-host`/`--dns`/`--hostname`, and nothing left on the
//! host after a container ends — also when kiln was killed with SIGKILL.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, kiln, store_with_busybox};

fn run(root: &Path, args: &[&str]) -> Output {
    kiln(root)
        .arg("run")
        .arg("--rm")
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn host(args: &[&str]) -> String {
    text(
        &Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap()
            .stdout,
    )
}

/// The network's leases naming `name` (empty when it has none).
fn leases_of(name: &str) -> Vec<serde_json::Value> {
    let Ok(bytes) = fs_err::read("/run/kiln/net/kiln0/leases.json") else {
        return Vec::new();
    };
    let leases: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
    leases
        .into_iter()
        .filter(|l| l["names"].as_array().unwrap().iter().any(|n| n == name))
        .collect()
}

/// Starts `kiln run` in the background serving `www` with busybox httpd on port 80, and waits
/// until `url` answers.
fn serve(root: &Path, www: &Path, args: &[&str], url: &str) -> Child {
    let mut command = kiln(root);
    command
        .arg("run")
        .arg("--rm")
        .args(args)
        .arg("-v")
        .arg(format!("{}:/www:ro", www.display()))
        .args(["busybox", "httpd", "-f", "-p", "80", "-h", "/www"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !curl(url).status.success() {
        assert!(Instant::now() < deadline, "{url} never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn curl(url: &str) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "2", url])
        .output()
        .unwrap()
}

/// Kills (SIGKILL) a background kiln and reaps it.
fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn published_ports_names_and_shared_namespaces_on_the_bridge() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let www = tempfile::tempdir().unwrap();
    fs_err::write(www.path().join("index.html"), "hello from the bridge\n").unwrap();
    let port = free_port();
    let name = format!("web-{port}");
    let url = format!("http://127.0.0.1:{port}/");
    let server = serve(
        root.path(),
        www.path(),
        &["--name", &name, "-p", &format!("127.0.0.1:{port}:80")],
        &url,
    );
    // Published on the host's loopback.
    assert_eq!(text(&curl(&url).stdout), "hello from the bridge\n");
    let lease = leases_of(&name).pop().expect("the server's lease");
    let address = lease["address"].as_str().unwrap().to_owned();
    let veth = format!(
        "kv{:08x}",
        u32::from(address.parse::<std::net::Ipv4Addr>().unwrap())
    );
    assert!(host(&["ip", "-o", "link"]).contains(&veth));

    // Another container reaches it by name, and sees its own address on the bridge.
    let output = run(
        root.path(),
        &[
            "busybox",
            "sh",
            "-c",
            &format!("wget -qO- http://{name}/ && ip -4 -o addr show eth0 | wc -l"),
        ],
    );
    assert_eq!(
        text(&output.stdout),
        "hello from the bridge\n1\n",
        "{}",
        text(&output.stderr)
    );
    // `container:NAME` shares its namespace: the server is on this container's loopback.
    let output = run(
        root.path(),
        &[
            "--network",
            &format!("container:{name}"),
            "busybox",
            "wget",
            "-qO-",
            "http://127.0.0.1/",
        ],
    );
    assert_eq!(
        text(&output.stdout),
        "hello from the bridge\n",
        "{}",
        text(&output.stderr)
    );
    // The same port cannot be published twice.
    let output = run(
        root.path(),
        &["-p", &format!("127.0.0.1:{port}:80"), "busybox", "true"],
    );
    assert_eq!(output.status.code(), Some(125));
    assert!(
        text(&output.stderr).contains(&format!(
            "Bind for 127.0.0.1:{port} failed: port is already allocated"
        )),
        "{}",
        text(&output.stderr)
    );

    // kiln killed with SIGKILL: the container dies with it, its network stays until the next
    // container on the network sweeps it.
    kill(server);
    assert!(!curl(&url).status.success());
    let output = run(root.path(), &["busybox", "true"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(leases_of(&name).is_empty());
    // The kernel destroys the namespace, and the pair with it, once its file is unmounted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host(&["ip", "-o", "link"]).contains(&veth) {
        assert!(Instant::now() < deadline, "{veth} is still there");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !host(&["nft", "list", "map", "ip", "kiln", "publish_addr_tcp"])
            .contains(&format!(". {port} :"))
    );
    assert!(
        !fs_err::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(lease["id"].as_str().unwrap())
    );
}

#[test]
fn a_container_that_ends_leaves_nothing_on_the_host() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let port = free_port();
    let name = format!("brief-{port}");
    let output = run(
        root.path(),
        &[
            "--name",
            &name,
            "-p",
            &format!("{port}:80/udp"),
            "busybox",
            "sh",
            "-c",
            "cat /sys/class/net/eth0/operstate; ip route | grep default",
        ],
    );
    assert_eq!(
        text(&output.stdout),
        "up\ndefault via 10.89.0.1 dev eth0 \n",
        "{}",
        text(&output.stderr)
    );
    assert!(leases_of(&name).is_empty());
    assert!(
        !host(&["nft", "list", "map", "ip", "kiln", "publish_udp"]).contains(&format!("{port} :"))
    );
}

#[test]
fn hosts_dns_and_hostname_flags_reach_the_container() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let output = run(
        root.path(),
        &[
            "-h",
            "box",
            "--add-host",
            "db.example:192.0.2.10",
            "--add-host",
            "gw=host-gateway",
            "--dns",
            "192.0.2.53",
            "busybox",
            "sh",
            "-c",
            "hostname; grep -E 'box|db.example|gw' /etc/hosts | cut -f2 | cut -d' ' -f1; cat /etc/resolv.conf",
        ],
    );
    assert_eq!(
        text(&output.stdout),
        "box\nbox\ndb.example\ngw\nnameserver 192.0.2.53\n",
        "{}",
        text(&output.stderr)
    );
    let output = run(
        root.path(),
        &[
            "--add-host",
            "gw=host-gateway",
            "busybox",
            "grep",
            "gw",
            "/etc/hosts",
        ],
    );
    assert_eq!(text(&output.stdout), "10.89.0.1\tgw\n");
    // `none` keeps only the loopback; `host` is the host's namespace.
    let output = run(
        root.path(),
        &["--network", "none", "busybox", "ls", "/sys/class/net"],
    );
    assert_eq!(text(&output.stdout), "lo\n");
    // Bad input, as docker words it.
    for (args, message) in [
        (
            &["--network", "mesh", "busybox", "true"][..],
            "network mesh not found",
        ),
        (
            &["-p", "80:80/sctp", "busybox", "true"],
            "invalid publish spec \"80:80/sctp\": invalid proto \"sctp\"",
        ),
        (
            &["--network", "container:nobody-here", "busybox", "true"],
            "cannot join network of container nobody-here",
        ),
        (
            &["--dns", "resolver", "busybox", "true"],
            "resolver is not an ip address",
        ),
    ] {
        let output = run(root.path(), args);
        assert_eq!(output.status.code(), Some(125), "{args:?}");
        assert!(
            text(&output.stderr).contains(message),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn publish_all_publishes_the_exposed_ports_on_free_host_ports() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let context = tempfile::tempdir().unwrap();
    fs_err::write(
        context.path().join("Dockerfile"),
        "FROM busybox\nEXPOSE 80 9999/udp\n",
    )
    .unwrap();
    let output = kiln(root.path())
        .args(["build", "-q", "-t", "exposed"])
        .arg(context.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let www = tempfile::tempdir().unwrap();
    fs_err::write(www.path().join("index.html"), "exposed\n").unwrap();
    let name = format!("exposed-{}", free_port());
    let mut child = kiln(root.path())
        .args(["run", "--rm", "--name", &name, "-P", "-v"])
        .arg(format!("{}:/www:ro", www.path().display()))
        .args(["exposed", "httpd", "-f", "-p", "80", "-h", "/www"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let lease = loop {
        if let Some(lease) = leases_of(&name).pop() {
            break lease;
        }
        assert!(Instant::now() < deadline, "no lease for {name}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut published: Vec<(u64, u64, String)> = lease["publish"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["container_port"].as_u64().unwrap(),
                p["host_port"].as_u64().unwrap(),
                p["protocol"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    published.sort();
    assert_eq!(published.len(), 2, "{published:?}");
    assert_eq!((published[0].0, published[0].2.as_str()), (80, "Tcp"));
    assert_eq!((published[1].0, published[1].2.as_str()), (9999, "Udp"));
    assert!(published.iter().all(|p| p.1 != 0), "{published:?}");
    let url = format!("http://127.0.0.1:{}/", published[0].1);
    while !curl(&url).status.success() {
        assert!(Instant::now() < deadline, "{url} never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(text(&curl(&url).stdout), "exposed\n");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_detached_container_serves_its_published_port_until_removed() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let www = tempfile::tempdir().unwrap();
    fs_err::write(www.path().join("index.html"), "detached web\n").unwrap();
    let port = free_port();
    let name = format!("dweb-{port}");
    // The example: `kiln run -d --name web -p 8080:80 web && curl localhost:8080`.
    let output = kiln(root.path())
        .args([
            "run",
            "-d",
            "--name",
            &name,
            "-p",
            &format!("{port}:80"),
            "-v",
        ])
        .arg(format!("{}:/www:ro", www.path().display()))
        .args(["busybox", "httpd", "-f", "-p", "80", "-h", "/www"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let url = format!("http://localhost:{port}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !curl(&url).status.success() {
        assert!(Instant::now() < deadline, "{url} never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(text(&curl(&url).stdout), "detached web\n");
    let ps = kiln(root.path()).args(["ps"]).output().unwrap();
    assert!(
        text(&ps.stdout).contains(&format!("0.0.0.0:{port}->80/tcp")),
        "{}",
        text(&ps.stdout)
    );
    let inspect = kiln(root.path()).args(["inspect", &name]).output().unwrap();
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let address = inspect[0]["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let lease = leases_of(&name).pop().expect("the container's lease");
    assert_eq!(lease["address"].as_str(), Some(address.as_str()));
    assert_eq!(inspect[0]["NetworkSettings"]["Gateway"], "10.89.0.1");
    let output = kiln(root.path())
        .args(["rm", "-f", &name])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(leases_of(&name).is_empty());
    assert!(!curl(&url).status.success());
}
