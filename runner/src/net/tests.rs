use std::net::Ipv4Addr;

use super::leases::Lease;
use super::{Protocol, Publish, hosts, resolv_conf};

fn publish(host_ip: Option<[u8; 4]>, host: u16, container: u16, protocol: Protocol) -> Publish {
    Publish {
        host_ip: host_ip.map(Ipv4Addr::from),
        host_port: host,
        container_port: container,
        protocol,
    }
}

#[test]
fn publish_specs_parse_as_docker_run_p() {
    use Protocol::{Tcp, Udp};
    assert_eq!(
        Publish::parse("8080:80").unwrap(),
        [publish(None, 8080, 80, Tcp)]
    );
    assert_eq!(
        Publish::parse("127.0.0.1:8080:80/udp").unwrap(),
        [publish(Some([127, 0, 0, 1]), 8080, 80, Udp)]
    );
    assert_eq!(Publish::parse("80").unwrap(), [publish(None, 0, 80, Tcp)]);
    assert_eq!(
        Publish::parse("127.0.0.1::80").unwrap(),
        [publish(Some([127, 0, 0, 1]), 0, 80, Tcp)]
    );
    assert_eq!(
        Publish::parse("0.0.0.0:8000-8001:80-81").unwrap(),
        [publish(None, 8000, 80, Tcp), publish(None, 8001, 81, Tcp)]
    );
    assert_eq!(
        Publish::parse("8080:80").unwrap()[0].to_string(),
        "0.0.0.0:8080->80/tcp"
    );
    for (bad, why) in [
        ("8080:80/sctp", "invalid proto \"sctp\""),
        ("a:80", "invalid port \"a\""),
        ("8080:0", "invalid port \"0\""),
        ("1.2.3:8080:80", "invalid IP address \"1.2.3\""),
        ("8000-8002:80-81", "ranges differ in length"),
        ("1:2:3:4", "too many colons"),
        ("[::1]:80:80", "IPv6"),
    ] {
        let err = Publish::parse(bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
        assert!(
            err.contains(&format!("invalid publish spec {bad:?}")),
            "{err}"
        );
    }
}

#[test]
fn exposed_ports_from_an_image_name_no_host_side() {
    assert_eq!(
        Publish::exposed("80/tcp").unwrap(),
        [publish(None, 0, 80, Protocol::Tcp)]
    );
    assert_eq!(
        Publish::exposed("53/udp").unwrap(),
        [publish(None, 0, 53, Protocol::Udp)]
    );
    for hostile in ["0.0.0.0:22:80", "22:80/tcp", "127.0.0.1::80"] {
        let err = Publish::exposed(hostile).unwrap_err().to_string();
        assert!(
            err.contains("an exposed port names no host address or port"),
            "{hostile}: {err}"
        );
    }
    assert!(Publish::exposed("80/sctp").is_err());
    assert!(Publish::exposed("").is_err());
}

#[test]
fn resolv_conf_drops_loopback_servers_and_takes_dns_flags() {
    let host = "search example.org\nnameserver 127.0.0.53\noptions edns0\n";
    assert_eq!(
        resolv_conf(host, &[]).unwrap(),
        "search example.org\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    );
    let host = "nameserver 192.0.2.1\nnameserver ::1\n";
    assert_eq!(resolv_conf(host, &[]).unwrap(), "nameserver 192.0.2.1\n");
    assert_eq!(
        resolv_conf(host, &["198.51.100.7".to_owned()]).unwrap(),
        "nameserver 198.51.100.7\n"
    );
    let err = resolv_conf(host, &["dns.example".to_owned()]).unwrap_err();
    assert!(
        err.to_string().contains("dns.example is not an ip address"),
        "{err}"
    );
}

fn lease(id: &str, last: u8, names: &[&str]) -> Lease {
    Lease {
        id: id.to_owned(),
        address: Ipv4Addr::new(10, 89, 0, last),
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        hostname: format!("host{last}"),
        extra_hosts: vec![("db.local".to_owned(), "192.0.2.9".to_owned())],
        publish: Vec::new(),
        peers: true,
    }
}

#[test]
fn hosts_files_name_the_container_and_its_peers() {
    let web = lease("1-1-0", 2, &["web"]);
    let api = lease("1-1-1", 3, &["api", "host3"]);
    let anonymous = lease("1-1-2", 4, &[]);
    let all = [web.clone(), api.clone(), anonymous];
    assert_eq!(
        hosts::render(&web, &all),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         10.89.0.2\thost2 web\n192.0.2.9\tdb.local\n10.89.0.3\tapi host3\n"
    );
    let hidden = Lease {
        peers: false,
        ..web.clone()
    };
    assert_eq!(
        hosts::render(&hidden, &all),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         10.89.0.2\thost2 web\n192.0.2.9\tdb.local\n"
    );
    assert_eq!(
        hosts::render(&api, &all),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         10.89.0.3\thost3 api\n192.0.2.9\tdb.local\n10.89.0.2\tweb\n"
    );
}
