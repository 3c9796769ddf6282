use std::sync::Mutex;

use super::*;
use crate::pb::control::{Vertex, VertexLog};

#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Reporter for Seen {
    fn event(&self, event: Event) {
        let text = match event {
            Event::Started { name, .. } => format!("started {name}"),
            Event::Cached { name, .. } => format!("cached {name}"),
            Event::Completed { name, duration, .. } => {
                format!("done {name} {}", duration.as_millis())
            }
            Event::Failed { name, error, .. } => format!("failed {name}: {error}"),
            Event::Log { data, stream, .. } => {
                format!("log {stream} {}", String::from_utf8_lossy(&data))
            }
            Event::Missed { .. } => "missed".to_owned(),
            Event::Phase { name, .. } => format!("phase {name}"),
        };
        self.0.lock().unwrap().push(text);
    }
}

fn at(millis: u64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(
        SystemTime::UNIX_EPOCH + Duration::from_millis(millis),
    ))
}

fn vertex(digest: &str, started: u64, completed: Option<u64>) -> Vertex {
    Vertex {
        digest: digest.to_owned(),
        name: digest.to_uppercase(),
        started: (started > 0).then(|| at(started)).flatten(),
        completed: completed.and_then(at),
        ..Vertex::default()
    }
}

#[test]
fn status_updates_become_one_start_and_one_end_per_vertex() {
    let seen = Arc::new(Seen::default());
    let mut events = StatusEvents::new(seen.clone());
    let update = |vertexes: Vec<Vertex>, logs: Vec<VertexLog>| StatusResponse {
        vertexes,
        logs,
        ..StatusResponse::default()
    };
    // Queued (not started): nothing yet.
    events.update(update(vec![vertex("a", 0, None)], vec![]));
    events.update(update(vec![vertex("a", 1000, None)], vec![]));
    events.update(update(
        vec![],
        vec![VertexLog {
            vertex: "a".to_owned(),
            stream: 2,
            msg: b"hi\n".to_vec(),
            ..VertexLog::default()
        }],
    ));
    // The same state again, then its end: once each.
    events.update(update(vec![vertex("a", 1000, None)], vec![]));
    events.update(update(vec![vertex("a", 1000, Some(1250))], vec![]));
    events.update(update(vec![vertex("a", 1000, Some(1250))], vec![]));
    let mut cached = vertex("b", 2000, Some(2000));
    cached.cached = true;
    events.update(update(vec![cached], vec![]));
    // Completed without a start seen before: started, then failed.
    let mut failed = vertex("c", 3000, Some(3100));
    failed.error = "exit code: 1".to_owned();
    events.update(update(vec![failed], vec![]));
    assert_eq!(
        *seen.0.lock().unwrap(),
        [
            "started A",
            "log 2 hi\n",
            "done A 250",
            "cached B",
            "started C",
            "failed C: exit code: 1",
        ]
    );
}

#[test]
fn hosts_are_unix_sockets_or_tcp_addresses() {
    let host: Host = "unix:///run/kiln/kiln.sock".parse().unwrap();
    assert_eq!(
        host.place,
        Place::Unix(PathBuf::from("/run/kiln/kiln.sock"))
    );
    assert_eq!(host.to_string(), "unix:///run/kiln/kiln.sock");
    let host: Host = "tcp://builder.example:1234".parse().unwrap();
    assert_eq!(
        host.place,
        Place::Tcp {
            authority: "builder.example:1234".to_owned(),
            name: "builder.example".to_owned()
        }
    );
    assert!(host.is_tcp());
    let err = |text: &str| text.parse::<Host>().unwrap_err().to_string();
    for bad in [
        "unix://kiln.sock",
        "/run/kiln.sock",
        "ssh://host",
        "fd://",
        "tcp://host",
        "tcp://:1234",
        "tcp://host:http",
    ] {
        assert_eq!(
            err(bad),
            format!("invalid --host {bad:?}: expected unix:///PATH or tcp://HOST:PORT")
        );
    }
}
