use std::collections::BTreeMap;
use std::sync::Mutex;

use kiln_llb::{CopyOptions, FileAction, State};

use super::*;
use crate::history::{History, MissReason};
use crate::scheduler::{CacheStore as _, Event};
use crate::testing::FakeExecutor;

#[test]
fn concurrent_history_saves_keep_every_entry() {
    let root = tempfile::tempdir().unwrap();
    // A history file of an older version is taken over.
    let mut legacy = History::default();
    legacy.next_generation();
    legacy.record_miss("legacy", MissReason::NoRecord);
    fs_err::write(root.path().join("cache-history.json"), legacy.to_json()).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let path = root.path().to_owned();
            std::thread::spawn(move || {
                // Its own store on the same root, as another process would have.
                let cache = StoreCache {
                    store: Arc::new(Store::open(path).unwrap()),
                    imports: Vec::new(),
                    pull: kiln_cache::PullOptions::default(),
                };
                let mut history = cache.load_history();
                for i in 0..40 {
                    history.next_generation();
                    history.record_miss(&format!("v{t}-{i}"), MissReason::NoRecord);
                    cache.save_history(&mut history);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let store = Store::open(root.path()).unwrap();
    let history = load_history(&store);
    for t in 0..2 {
        for i in 0..40 {
            assert!(
                history.miss(&format!("v{t}-{i}")).is_some(),
                "v{t}-{i} lost"
            );
        }
    }
    assert!(history.miss("legacy").is_some());
    assert!(!root.path().join("cache-history.json").exists());
}

/// Whether this process can make overlay mounts; says why not when it cannot.
pub(super) fn can_mount(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    kiln_testdata::skip(&format!("{what} needs root"));
    false
}

#[derive(Default)]
pub(super) struct Recorder(Mutex<Vec<Event>>);
impl Reporter for Recorder {
    fn event(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}
impl Recorder {
    /// The digest of the vertex that started with this name.
    fn digest(&self, name: &str) -> Arc<str> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find_map(|e| match e {
                Event::Started { vertex, name: n } if n == name => Some(vertex.clone()),
                _ => None,
            })
            .unwrap()
    }

    pub(super) fn names(&self, cached: bool) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Cached { name, .. } if cached => Some(name.clone()),
                Event::Started { name, .. } if !cached => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

pub(super) fn session(store: &Path, locals: &[(&str, &Path)]) -> Session {
    let mut config = config(store, &[]);
    config.locals = locals
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_path_buf()))
        .collect();
    Session::new(config, None)
}

/// A session configuration on the store at `store` with these secrets and no executor.
pub(super) fn config(store: &Path, secrets: &[(&str, &str)]) -> SessionConfig {
    SessionConfig {
        store: Arc::new(Store::open(store).unwrap()),
        executor: Arc::new(FakeExecutor::refusing("no exec in these tests")),
        pull: kiln_cache::PullOptions::default(),
        locals: HashMap::new(),
        local_dirs: None,
        secrets: secrets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect(),
        ssh: HashMap::new(),
        no_cache: false,
        entitlements: Default::default(),
        cache_imports: Vec::new(),
    }
}

/// A Definition of `op` alone (it has no inputs), with `metadata` for it.
pub(super) fn definition(op: pb::Op, metadata: Option<pb::OpMetadata>) -> LoadedDefinition {
    let digest = kiln_llb::op_digest(&op);
    let terminal = pb::Op {
        inputs: vec![pb::Input {
            digest: digest.to_string(),
            index: 0,
        }],
        ..Default::default()
    };
    LoadedDefinition::from_definition(pb::Definition {
        def: vec![kiln_llb::marshal_op(&op), kiln_llb::marshal_op(&terminal)],
        metadata: metadata
            .map(|m| (digest.to_string(), m))
            .into_iter()
            .collect(),
        ..Default::default()
    })
    .unwrap()
}

pub(super) async fn solve(session: &Session, state: &State, recorder: &Arc<Recorder>) -> Ref {
    let bytes = kiln_llb::prost::Message::encode_to_vec(&state.marshal());
    let definition = LoadedDefinition::from_bytes(&bytes).unwrap();
    session.solve(&definition, recorder.clone()).await.unwrap()
}

/// The files of a result: path to content (directories as `/`).
pub(super) fn tree(session: &Session, result: &Ref) -> BTreeMap<String, String> {
    let store = &session.config().store;
    store
        .with_snapshot(result.key(), |root| {
            let mut files = BTreeMap::new();
            let mut stack = vec![root.to_owned()];
            while let Some(dir) = stack.pop() {
                for entry in fs_err::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    let rel = path.strip_prefix(root).unwrap().to_string_lossy();
                    if path.is_dir() {
                        files.insert(format!("{rel}/"), String::new());
                        stack.push(path);
                    } else {
                        files.insert(rel.into_owned(), fs_err::read_to_string(&path).unwrap());
                    }
                }
            }
            files
        })
        .unwrap()
}

fn copy_a(local: &State) -> State {
    kiln_llb::scratch().file(FileAction::copy(local, "/a", "/a", CopyOptions::default()))
}

#[tokio::test]
async fn the_same_files_under_another_definition_hit_and_changes_have_reasons() {
    if !can_mount("solving file ops") {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let context = tempfile::tempdir().unwrap();
    fs_err::write(context.path().join("a"), "alpha").unwrap();
    fs_err::write(context.path().join("b"), "beta").unwrap();
    let ctx = context.path();

    let first = session(store.path(), &[("one", ctx)]);
    let recorder = Arc::new(Recorder::default());
    let one = copy_a(&kiln_llb::local("one"));
    let result = solve(&first, &one, &recorder).await;
    assert_eq!(tree(&first, &result)["a"], "alpha");
    assert_eq!(
        recorder.names(false).len(),
        2,
        "the source and the copy ran"
    );

    // Another process, the same directory under another name (another definition):
    // the copy is found by its content-based key, and the directory is not even copied.
    let second = session(store.path(), &[("two", ctx)]);
    let recorder = Arc::new(Recorder::default());
    let two = copy_a(&kiln_llb::local("two"));
    let again = solve(&second, &two, &recorder).await;
    assert_eq!(recorder.names(false), Vec::<String>::new());
    assert_eq!(recorder.names(true).len(), 1);
    assert_eq!(again, result);

    // An unrelated file changes: the source runs again (and says which file changed),
    // the copy is found by a checksum of exactly the file it copies.
    fs_err::write(context.path().join("b"), "BETA").unwrap();
    let third = session(store.path(), &[("two", ctx)]);
    let recorder = Arc::new(Recorder::default());
    solve(&third, &two, &recorder).await;
    assert_eq!(recorder.names(false), ["local://two"]);
    assert_eq!(recorder.names(true).len(), 1, "the copy");
    let history = load_history(&third.config().store);
    let reasons: Vec<&MissReason> = history.misses().values().map(|m| &m.reason).collect();
    assert!(
        matches!(reasons[..], [MissReason::ContentChanged {
            file: Some(f),
            old,
            new,
            change: Some(crate::FileChange::Modified { new_size: 4, .. }),
        }] if f == "b" && old != new),
        "{reasons:?}"
    );

    // The copied file changes: both run, and the copy says its input changed.
    fs_err::write(context.path().join("a"), "ALPHA").unwrap();
    let fourth = session(store.path(), &[("two", ctx)]);
    let recorder = Arc::new(Recorder::default());
    let result = solve(&fourth, &two, &recorder).await;
    assert_eq!(tree(&fourth, &result)["a"], "ALPHA");
    assert_eq!(recorder.names(false).len(), 2);
    let history = load_history(&fourth.config().store);
    let reasons: Vec<&MissReason> = history.misses().values().map(|m| &m.reason).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| matches!(r,
            MissReason::ContentChanged { file: Some(f), .. } if f == "a")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| matches!(r,
            MissReason::InputChanged { input: 0, vertex, .. } if **vertex == *recorder.digest("local://two"))),
        "{reasons:?}"
    );
}

/// Local directories brought on request, recording each request.
struct RecordingLocalDirs {
    dir: PathBuf,
    requests: Mutex<Vec<LocalRequest>>,
}

impl LocalDirs for RecordingLocalDirs {
    fn sync(
        &self,
        request: LocalRequest,
    ) -> futures::future::BoxFuture<
        'static,
        Result<PathBuf, Box<dyn std::error::Error + Send + Sync>>,
    > {
        self.requests.lock().unwrap().push(request);
        let dir = self.dir.clone();
        Box::pin(async move { Ok(dir) })
    }
}

#[tokio::test]
async fn a_local_source_not_given_is_brought_once_with_its_selection() {
    if !can_mount("solving file ops") {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let context = tempfile::tempdir().unwrap();
    fs_err::write(context.path().join("a"), "alpha").unwrap();
    let dirs = Arc::new(RecordingLocalDirs {
        dir: context.path().to_owned(),
        requests: Mutex::default(),
    });
    let mut config = config(store.path(), &[]);
    config.local_dirs = Some(dirs.clone());
    let session = Session::new(config, None);
    let local = kiln_llb::local_with(
        "context",
        kiln_llb::LocalOptions {
            include_patterns: vec!["a".to_owned()],
            exclude_patterns: vec!["*.md".to_owned()],
            follow_paths: vec!["a".to_owned()],
            shared_key_hint: Some("ctx".to_owned()),
            unique: None,
        },
    );
    let result = solve(&session, &copy_a(&local), &Arc::new(Recorder::default())).await;
    assert_eq!(tree(&session, &result)["a"], "alpha");
    // Keyed and copied from one transfer.
    let requests = dirs.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        [LocalRequest {
            name: "context".to_owned(),
            session: None,
            shared_key_hint: Some("ctx".to_owned()),
            include_patterns: vec!["a".to_owned()],
            exclude_patterns: vec!["*.md".to_owned()],
            follow_paths: vec!["a".to_owned()],
        }]
    );

    // Without a way to bring it, the source is an error naming the flag.
    let without = session_without_locals(store.path());
    let bytes =
        kiln_llb::prost::Message::encode_to_vec(&copy_a(&kiln_llb::local("other")).marshal());
    let definition = LoadedDefinition::from_bytes(&bytes).unwrap();
    let error = without
        .solve(&definition, Arc::new(Recorder::default()))
        .await
        .unwrap_err();
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(
        chain.contains("no local directory named \"other\" was given"),
        "{chain}"
    );
}

fn session_without_locals(store: &Path) -> Session {
    session(store, &[])
}

/// A reuse record is trusted only as far as the earlier snapshot's very entries: a link on the
/// way to a reused path, inside that snapshot or out of it, is never followed, and the file is
/// copied from the context instead.
#[test]
fn reusing_an_earlier_snapshot_never_follows_its_links() {
    use std::os::unix::fs::{MetadataExt, symlink};
    let outside = tempfile::tempdir().unwrap();
    fs_err::write(outside.path().join("secret"), "host file").unwrap();
    // The earlier snapshot: `out` leads out of it, `in` to another of its directories, and
    // `leaf` is a link where the context has a file.
    let earlier = tempfile::tempdir().unwrap();
    let snap = earlier.path();
    symlink(outside.path(), snap.join("out")).unwrap();
    fs_err::create_dir(snap.join("real")).unwrap();
    fs_err::write(snap.join("real/secret"), "other snapshot file").unwrap();
    symlink("real", snap.join("in")).unwrap();
    symlink(outside.path().join("secret"), snap.join("leaf")).unwrap();
    fs_err::write(snap.join("same"), "unchanged").unwrap();

    let context = tempfile::tempdir().unwrap();
    for dir in ["out", "in"] {
        fs_err::create_dir(context.path().join(dir)).unwrap();
        fs_err::write(context.path().join(dir).join("secret"), "context file").unwrap();
    }
    fs_err::write(context.path().join("leaf"), "context file").unwrap();
    fs_err::write(context.path().join("same"), "unchanged").unwrap();
    let selected = local::LocalFilter::default()
        .select(context.path())
        .unwrap();
    let reuse = Reuse {
        from: snap.to_owned(),
        files: ["out/secret", "in/secret", "leaf", "same"]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
    };
    let dest = tempfile::tempdir().unwrap();
    copy_selected(context.path(), dest.path(), &selected, Some(&reuse)).unwrap();

    let inode = |path: &Path| fs_err::symlink_metadata(path).unwrap().ino();
    for rel in ["out/secret", "in/secret", "leaf"] {
        let copied = dest.path().join(rel);
        assert_eq!(
            fs_err::read_to_string(&copied).unwrap(),
            "context file",
            "{rel}"
        );
        assert_eq!(fs_err::metadata(&copied).unwrap().nlink(), 1, "{rel}");
    }
    assert_ne!(
        inode(&dest.path().join("out/secret")),
        inode(&outside.path().join("secret"))
    );
    assert_eq!(
        fs_err::read_to_string(outside.path().join("secret")).unwrap(),
        "host file"
    );
    // The one file the snapshot really has at that path is linked from it.
    assert_eq!(inode(&dest.path().join("same")), inode(&snap.join("same")));
}
