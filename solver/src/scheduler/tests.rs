//! The scheduler with synthetic ops: constants, sums and ops that sleep, fail or count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};

use super::*;
use crate::cache_key::CacheKey;
use crate::history::{DefinitionChange, Fact, Lineage, MissReason, Outline};

#[derive(Default)]
struct Counters {
    execs: Mutex<HashMap<String, usize>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    content_digests: AtomicUsize,
}

impl Counters {
    fn execs(&self, name: &str) -> usize {
        lock(&self.execs).get(name).copied().unwrap_or(0)
    }
}

/// Adds `add` to the sum of its inputs; optionally sleeps, fails, or keys inputs by content.
struct Sum {
    name: String,
    add: u64,
    inputs: usize,
    sleep: Duration,
    fail: bool,
    content_inputs: bool,
    /// With `content_inputs`: the first input (a copy's destination) is keyed by definition.
    content_skips_first: bool,
    class: ResourceClass,
    counters: Arc<Counters>,
    dropped: Option<Arc<AtomicBool>>,
    source_content: Option<String>,
    /// A lineage named after the op, with its `add` as the value of a variable `ADD`.
    lineage: bool,
    /// An outline of kind `sum` whose one part, `command`, is `add N`.
    outline: bool,
}

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Op<u64> for Sum {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<u64>, OpError>> {
        let map = CacheMap {
            outline: self.outline.then(|| Outline {
                kind: "sum",
                fields: vec![("command".into(), format!("add {}", self.add))],
            }),
            lineage: self.lineage.then(|| Lineage {
                id: format!("lineage:{}", self.name),
                facts: vec![Fact::Env {
                    name: "ADD".into(),
                    value: self.add.to_string(),
                }],
            }),
            digest: format!("sum:{}:{}", self.add, self.fail),
            deps: (0..self.inputs)
                .map(|i| {
                    let content = self.content_inputs && !(self.content_skips_first && i == 0);
                    dep(content, &self.counters)
                })
                .collect(),
        };
        async move { Ok(map) }.boxed()
    }

    fn exec(
        &self,
        ctx: OpContext,
        inputs: Vec<u64>,
    ) -> BoxFuture<'static, Result<Vec<u64>, OpError>> {
        let counters = self.counters.clone();
        let (name, add, sleep, fail) = (self.name.clone(), self.add, self.sleep, self.fail);
        let guard = self.dropped.clone().map(SetOnDrop);
        async move {
            let _guard = guard;
            *lock(&counters.execs).entry(name.clone()).or_default() += 1;
            let now = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
            counters.max_running.fetch_max(now, Ordering::SeqCst);
            ctx.log(1, name.as_bytes());
            tokio::time::sleep(sleep).await;
            counters.running.fetch_sub(1, Ordering::SeqCst);
            if fail {
                return Err(format!("{name} exited with code 1").into());
            }
            Ok(vec![add + inputs.iter().sum::<u64>()])
        }
        .boxed()
    }

    fn resource_class(&self) -> ResourceClass {
        self.class
    }

    fn content_key(
        &self,
        _: OpContext,
    ) -> BoxFuture<'static, Result<Option<SourceContent>, OpError>> {
        let content = self.source_content.clone().map(|digest| SourceContent {
            changed: Some(format!("file-of-{digest}")),
            change: None,
            digest,
        });
        async move { Ok(content) }.boxed()
    }
}

fn dep(content: bool, counters: &Arc<Counters>) -> CacheDep<u64> {
    let counters = counters.clone();
    CacheDep {
        selector: None,
        content: content.then(|| {
            Arc::new(move |value: u64, _selector: Option<String>| {
                counters.content_digests.fetch_add(1, Ordering::SeqCst);
                async move { Ok(format!("value:{value}")) }.boxed()
            }) as ContentDigestFn<u64>
        }),
    }
}

/// A test graph builder.
struct TestGraph {
    graph: Graph<u64>,
    counters: Arc<Counters>,
}

impl TestGraph {
    fn new() -> Self {
        Self {
            graph: Graph::new(),
            counters: Arc::new(Counters::default()),
        }
    }

    fn sum(&mut self, name: &str, add: u64, inputs: &[&str]) -> &mut Self {
        self.add(name, add, inputs, |_| {})
    }

    fn add(
        &mut self,
        name: &str,
        add: u64,
        inputs: &[&str],
        tweak: impl FnOnce(&mut Sum),
    ) -> &mut Self {
        let mut op = Sum {
            name: name.to_owned(),
            add,
            inputs: inputs.len(),
            sleep: Duration::ZERO,
            fail: false,
            content_inputs: false,
            content_skips_first: false,
            class: ResourceClass::Exec,
            counters: self.counters.clone(),
            dropped: None,
            source_content: None,
            lineage: false,
            outline: false,
        };
        tweak(&mut op);
        self.graph.add(Vertex {
            digest: name.into(),
            name: name.to_owned(),
            inputs: inputs
                .iter()
                .map(|i| Edge {
                    vertex: (*i).into(),
                    output: 0,
                })
                .collect(),
            op: Arc::new(op),
            ignore_cache: false,
        });
        self
    }
}

#[derive(Default)]
struct MemCache(Mutex<HashMap<CacheKey, Vec<u64>>>);

impl CacheStore<u64> for MemCache {
    fn load(&self, key: &CacheKey) -> BoxFuture<'static, Result<Option<Vec<u64>>, OpError>> {
        let hit = lock(&self.0).get(key).cloned();
        async move { Ok(hit) }.boxed()
    }
    fn save(&self, key: &CacheKey, outputs: &[u64]) -> BoxFuture<'static, Result<(), OpError>> {
        lock(&self.0).insert(*key, outputs.to_vec());
        async { Ok(()) }.boxed()
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Reporter for Recorder {
    fn event(&self, event: Event) {
        lock(&self.0).push(event);
    }
}

impl Recorder {
    fn cached(&self) -> Vec<String> {
        lock(&self.0)
            .iter()
            .filter_map(|e| match e {
                Event::Cached { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

fn target(name: &str) -> Edge {
    Edge {
        vertex: name.into(),
        output: 0,
    }
}

async fn solve(
    scheduler: &Scheduler<u64>,
    graph: Arc<Graph<u64>>,
    name: &str,
) -> Result<u64, SolveError> {
    scheduler
        .solve(graph, target(name), Arc::new(NoReporter))
        .await
}

#[tokio::test]
async fn diamond_runs_each_vertex_once() {
    let mut t = TestGraph::new();
    t.sum("a", 2, &[])
        .sum("b", 10, &["a"])
        .sum("c", 100, &["a"])
        .sum("d", 1000, &["b", "c"]);
    let counters = t.counters.clone();
    let scheduler = Scheduler::builder().build();
    let result = solve(&scheduler, Arc::new(t.graph), "d").await.unwrap();
    assert_eq!(result, 1000 + (10 + 2) + (100 + 2));
    for name in ["a", "b", "c", "d"] {
        assert_eq!(counters.execs(name), 1, "{name}");
    }
}

#[tokio::test]
async fn exec_parallelism_is_bounded_and_io_only_by_its_own_larger_bound() {
    for (limit, io_limit, class, expected) in [
        (1, 16, ResourceClass::Exec, 1),
        (2, 16, ResourceClass::Exec, 2),
        (1, 16, ResourceClass::Io, 3),
        (3, 2, ResourceClass::Io, 2),
    ] {
        // Three different ops (equal ones would be one piece of work: see
        // `equal_work_under_two_digests_runs_once`).
        let mut t = TestGraph::new();
        for (add, leaf) in [(1, "x"), (2, "y"), (3, "z")] {
            t.add(leaf, add, &[], |op| {
                op.sleep = Duration::from_millis(100);
                op.class = class;
            });
        }
        t.sum("top", 0, &["x", "y", "z"]);
        let counters = t.counters.clone();
        let scheduler = Scheduler::builder()
            .max_parallel_exec(limit)
            .max_parallel_io(io_limit)
            .build();
        assert_eq!(
            solve(&scheduler, Arc::new(t.graph), "top").await.unwrap(),
            6
        );
        assert_eq!(
            counters.max_running.load(Ordering::SeqCst),
            expected,
            "limit {limit}, io limit {io_limit}, {class:?}"
        );
    }
}

/// Independent stages copied one after another into a final stage (`COPY --from` chain): the
/// copies' content keys need the stages' results, and every stage starts at once, not each
/// after the copy below it.
#[tokio::test]
async fn stages_copied_in_a_chain_run_in_parallel() {
    let mut t = TestGraph::new();
    t.sum("base", 1, &[]);
    let mut below = "base".to_owned();
    for stage in 1..=4 {
        let name = format!("stage{stage}");
        t.add(&name, stage, &["base"], |op| {
            op.sleep = Duration::from_millis(300);
        });
        let copy = format!("copy{stage}");
        t.add(&copy, 0, &[below.as_str(), name.as_str()], |op| {
            op.content_inputs = true;
            op.content_skips_first = true;
            op.class = ResourceClass::Io;
        });
        below = copy;
    }
    let counters = t.counters.clone();
    let scheduler = Scheduler::builder()
        .cache(Arc::new(MemCache::default()))
        .max_parallel_exec(4)
        .build();
    let result = solve(&scheduler, Arc::new(t.graph), "copy4").await.unwrap();
    assert_eq!(result, 1 + (1 + 1 + 1 + 1) + (1 + 2 + 3 + 4));
    assert_eq!(
        counters.max_running.load(Ordering::SeqCst),
        4,
        "the four stages ran one by one"
    );
}

/// A copy from one stage into another (`COPY --from=build` in the final stage): the copy's
/// content key needs the source stage's result, and the destination stage, not in the cache
/// either, runs at the same time instead of after it.
#[tokio::test]
async fn a_copy_s_destination_runs_beside_its_source() {
    let mut t = TestGraph::new();
    t.sum("base", 1, &[]);
    for (name, value) in [("dest", 2), ("source", 3)] {
        t.add(name, value, &["base"], |op| {
            op.sleep = Duration::from_millis(300);
        });
    }
    t.add("copy", 0, &["dest", "source"], |op| {
        op.content_inputs = true;
        op.content_skips_first = true;
        op.class = ResourceClass::Io;
    });
    let counters = t.counters.clone();
    let scheduler = Scheduler::builder()
        .cache(Arc::new(MemCache::default()))
        .max_parallel_exec(4)
        .build();
    let result = solve(&scheduler, Arc::new(t.graph), "copy").await.unwrap();
    assert_eq!(result, (1 + 2) + (1 + 3));
    assert_eq!(
        counters.max_running.load(Ordering::SeqCst),
        2,
        "the destination ran after the source"
    );
    assert_eq!(counters.execs("dest") + counters.execs("source"), 2);
}

#[tokio::test]
async fn cached_top_runs_nothing_below() {
    let cache = Arc::new(MemCache::default());
    let scheduler = Scheduler::builder().cache(cache).build();
    let build = || {
        let mut t = TestGraph::new();
        t.sum("base", 1, &[])
            .sum("mid", 2, &["base"])
            .sum("top", 3, &["mid"]);
        t
    };
    let first = build();
    assert_eq!(
        solve(&scheduler, Arc::new(first.graph), "top")
            .await
            .unwrap(),
        6
    );

    let second = build();
    let counters = second.counters.clone();
    let recorder = Arc::new(Recorder::default());
    let result = scheduler
        .solve(Arc::new(second.graph), target("top"), recorder.clone())
        .await
        .unwrap();
    assert_eq!(result, 6);
    assert_eq!(
        counters.execs("base") + counters.execs("mid") + counters.execs("top"),
        0
    );
    // Nothing below the hit runs, and every step is listed cached, inputs first.
    assert_eq!(recorder.cached(), ["base", "mid", "top"]);
}

#[tokio::test]
async fn changed_input_misses_the_cache_downstream_only() {
    let cache = Arc::new(MemCache::default());
    let scheduler = Scheduler::builder().cache(cache).build();
    let mut t = TestGraph::new();
    t.sum("other", 5, &[])
        .sum("base", 1, &[])
        .sum("top", 3, &["base", "other"]);
    solve(&scheduler, Arc::new(t.graph), "top").await.unwrap();

    let mut t = TestGraph::new();
    t.sum("other", 5, &[])
        .sum("base", 7, &[])
        .sum("top", 3, &["base", "other"]);
    let counters = t.counters.clone();
    assert_eq!(
        solve(&scheduler, Arc::new(t.graph), "top").await.unwrap(),
        15
    );
    assert_eq!(counters.execs("base"), 1);
    assert_eq!(counters.execs("top"), 1);
    assert_eq!(
        counters.execs("other"),
        0,
        "an unchanged input comes from the cache"
    );
}

#[tokio::test]
async fn ignore_cache_runs_again() {
    let cache = Arc::new(MemCache::default());
    let scheduler = Scheduler::builder().cache(cache).build();
    let mut t = TestGraph::new();
    t.sum("a", 1, &[]);
    solve(&scheduler, Arc::new(t.graph), "a").await.unwrap();
    let mut t = TestGraph::new();
    t.sum("a", 1, &[]);
    let counters = t.counters.clone();
    let mut graph = t.graph;
    graph.vertices.get_mut("a").unwrap().ignore_cache = true;
    solve(&scheduler, Arc::new(graph), "a").await.unwrap();
    assert_eq!(counters.execs("a"), 1);
}

#[tokio::test]
async fn the_vertices_above_one_that_ignores_the_cache_run_again() {
    let cache = Arc::new(MemCache::default());
    let scheduler = Scheduler::builder().cache(cache).build();
    let graph = || {
        let mut t = TestGraph::new();
        t.sum("a", 1, &[])
            .sum("b", 2, &["a"])
            .sum("side", 4, &[])
            .sum("top", 8, &["b", "side"]);
        t
    };
    let t = graph();
    assert_eq!(
        solve(&scheduler, Arc::new(t.graph), "top").await.unwrap(),
        15
    );
    let t = graph();
    let counters = t.counters.clone();
    let mut graph = t.graph;
    graph.vertices.get_mut("a").unwrap().ignore_cache = true;
    assert_eq!(solve(&scheduler, Arc::new(graph), "top").await.unwrap(), 15);
    // a runs again, and what was made from it; the side branch stays cached.
    let execs: Vec<usize> = ["a", "b", "side", "top"]
        .iter()
        .map(|v| counters.execs(v))
        .collect();
    assert_eq!(execs, [1, 1, 0, 1]);
}

#[tokio::test]
async fn content_based_key_hits_when_content_is_equal() {
    let cache = Arc::new(MemCache::default());
    let scheduler = Scheduler::builder().cache(cache).build();
    let mut t = TestGraph::new();
    t.sum("src", 5, &[])
        .add("copy", 1, &["src"], |op| op.content_inputs = true);
    assert_eq!(
        solve(&scheduler, Arc::new(t.graph), "copy").await.unwrap(),
        6
    );

    // A different source op whose result has the same content: the copy is not run again.
    let mut t = TestGraph::new();
    t.add("src", 2, &[], |op| op.sleep = Duration::ZERO)
        .add("plus3", 3, &["src"], |_| {})
        .add("copy", 1, &["plus3"], |op| op.content_inputs = true);
    let counters = t.counters.clone();
    assert_eq!(
        solve(&scheduler, Arc::new(t.graph), "copy").await.unwrap(),
        6
    );
    assert_eq!(
        counters.execs("plus3"),
        1,
        "content keys need the input's result"
    );
    assert_eq!(counters.execs("copy"), 0);
}

#[tokio::test]
async fn a_definition_hit_hashes_and_runs_nothing_below_and_a_content_hit_carries_downstream() {
    let cache = Arc::new(MemCache::default());
    let scheduler = Scheduler::builder().cache(cache).build();
    let build = |src_add: u64, extra: bool| {
        let mut t = TestGraph::new();
        t.sum("src", src_add, &[]);
        let below = if extra {
            t.sum("plus", 5 - src_add, &["src"]);
            "plus"
        } else {
            "src"
        };
        t.add("copy", 1, &[below], |op| op.content_inputs = true)
            .sum("run", 10, &["copy"]);
        t
    };
    let first = build(5, false);
    let counters = first.counters.clone();
    assert_eq!(
        solve(&scheduler, Arc::new(first.graph), "run")
            .await
            .unwrap(),
        16
    );
    assert_eq!(counters.content_digests.load(Ordering::SeqCst), 1);

    // The same definition: found by its definition-based key, nothing hashed or run.
    let same = build(5, false);
    let counters = same.counters.clone();
    assert_eq!(
        solve(&scheduler, Arc::new(same.graph), "run")
            .await
            .unwrap(),
        16
    );
    assert_eq!(counters.content_digests.load(Ordering::SeqCst), 0);
    assert_eq!(counters.execs("src") + counters.execs("copy"), 0);

    // A different definition of the same content below the copy: the copy hits by its
    // content-based key, and so does the run on top of it.
    let other = build(2, true);
    let counters = other.counters.clone();
    let recorder = Arc::new(Recorder::default());
    let result = scheduler
        .solve(Arc::new(other.graph), target("run"), recorder.clone())
        .await
        .unwrap();
    assert_eq!(result, 16);
    assert_eq!(counters.execs("plus"), 1, "content keys need the input");
    assert_eq!(counters.execs("copy") + counters.execs("run"), 0);
    assert_eq!(recorder.cached(), ["run"]);

    // And now the new definition is known by its definition-based key too.
    let again = build(2, true);
    let counters = again.counters.clone();
    solve(&scheduler, Arc::new(again.graph), "run")
        .await
        .unwrap();
    assert_eq!(counters.execs("plus") + counters.execs("src"), 0);
    assert_eq!(counters.content_digests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_definition_hit_without_history_still_hashes_and_pulls_nothing() {
    let cache = Arc::new(MemCache::default());
    let build = || {
        let mut t = TestGraph::new();
        t.sum("src", 5, &[])
            .add("copy", 1, &["src"], |op| op.content_inputs = true)
            .sum("run", 10, &["copy"]);
        t
    };
    let first = Scheduler::builder().cache(cache.clone()).build();
    solve(&first, Arc::new(build().graph), "run").await.unwrap();
    // Only the top's record is left, and a new scheduler knows no history.
    lock(&cache.0).retain(|_, v| v == &vec![16]);
    let second = Scheduler::builder().cache(cache).build();
    let t = build();
    let counters = t.counters.clone();
    assert_eq!(solve(&second, Arc::new(t.graph), "run").await.unwrap(), 16);
    assert_eq!(counters.content_digests.load(Ordering::SeqCst), 0);
    assert_eq!(counters.execs("src") + counters.execs("copy"), 0);
}

#[tokio::test]
async fn every_miss_has_a_reason() {
    let cache = Arc::new(MemCache::default());
    let scheduler = Scheduler::builder().cache(cache.clone()).build();
    let build = |base: u64, content: &str| {
        let mut t = TestGraph::new();
        let content = content.to_owned();
        t.add("files", 0, &[], |op| op.source_content = Some(content))
            .sum("base", base, &[])
            .sum("top", 3, &["base", "files"]);
        t.graph
    };
    let reason = |vertex: &str| scheduler.history().miss(vertex).map(|m| m.reason.clone());

    solve(&scheduler, Arc::new(build(1, "c1")), "top")
        .await
        .unwrap();
    assert_eq!(reason("top"), Some(MissReason::NoRecord));
    assert_eq!(reason("files"), Some(MissReason::NoRecord));

    // The source's content changes: it says so, with the file its op named.
    solve(&scheduler, Arc::new(build(1, "c2")), "top")
        .await
        .unwrap();
    assert_eq!(
        reason("files"),
        Some(MissReason::ContentChanged {
            old: "c1".into(),
            new: "c2".into(),
            file: Some("file-of-c2".into()),
            change: None,
        })
    );
    let Some(MissReason::InputChanged {
        input,
        vertex,
        old,
        new,
    }) = reason("top")
    else {
        panic!("{:?}", reason("top"));
    };
    assert_eq!((input, vertex.as_str()), (1, "files"));
    assert_ne!(old, new);
    let history = scheduler.history();
    let misses = history.misses();
    assert_eq!(
        misses.keys().copied().collect::<Vec<_>>(),
        ["files", "top"],
        "base was cached"
    );

    // Another input changes.
    solve(&scheduler, Arc::new(build(7, "c2")), "top")
        .await
        .unwrap();
    assert!(matches!(
        reason("top"),
        Some(MissReason::InputChanged { input: 0, ref vertex, .. }) if vertex == "base"
    ));

    // The result was pruned: same key, nothing there.
    lock(&cache.0).clear();
    solve(&scheduler, Arc::new(build(7, "c2")), "top")
        .await
        .unwrap();
    assert_eq!(reason("top"), Some(MissReason::Pruned));

    // Ignored.
    let mut graph = build(7, "c2");
    graph.vertices.get_mut("top").unwrap().ignore_cache = true;
    solve(&scheduler, Arc::new(graph), "top").await.unwrap();
    assert_eq!(reason("top"), Some(MissReason::Ignored));
}

#[tokio::test]
async fn a_changed_op_of_a_known_lineage_names_the_changed_fact() {
    let scheduler = Scheduler::builder()
        .cache(Arc::new(MemCache::default()))
        .build();
    let build = |add: u64| {
        let mut t = TestGraph::new();
        t.sum("base", 1, &[])
            .add("run", add, &["base"], |op| op.lineage = true);
        Arc::new(t.graph)
    };
    let reason = |vertex: &str| scheduler.history().miss(vertex).map(|m| m.reason.clone());
    solve(&scheduler, build(2), "run").await.unwrap();
    assert_eq!(reason("run"), Some(MissReason::NoRecord));
    // The op's digest changes with `add`: a new op, of a lineage seen before.
    solve(&scheduler, build(5), "run").await.unwrap();
    assert_eq!(
        reason("run"),
        Some(MissReason::DefinitionChanged {
            changes: vec![DefinitionChange::Env {
                name: "ADD".into(),
                old: Some("2".into()),
                new: Some("5".into()),
            }],
        })
    );
    // Back to an op recorded before: that one's result is still cached.
    let recorder = Arc::new(Recorder::default());
    scheduler
        .solve(build(2), target("run"), recorder.clone())
        .await
        .unwrap();
    assert_eq!(recorder.cached(), ["base", "run"]);
}

#[tokio::test]
async fn a_changed_op_is_compared_with_the_op_at_its_place_it_differs_least_from() {
    let scheduler = Scheduler::builder()
        .cache(Arc::new(MemCache::default()))
        .build();
    // Two ops on one input: both at one place. `b` sorts first by its op's digest.
    let build = |a: u64, base: u64| {
        let mut t = TestGraph::new();
        t.sum("base", base, &[])
            .add("a", a, &["base"], |op| op.outline = true)
            .add("b", 1, &["base"], |op| op.outline = true)
            .sum("top", 0, &["a", "b"]);
        Arc::new(t.graph)
    };
    let reason = |vertex: &str| scheduler.history().miss(vertex).map(|m| m.reason.clone());
    solve(&scheduler, build(5, 100), "top").await.unwrap();
    assert_eq!(reason("a"), Some(MissReason::NoRecord));
    // `a` changes: both ops there differ from it in its command; `a` is named alike.
    solve(&scheduler, build(6, 100), "top").await.unwrap();
    assert_eq!(
        reason("a"),
        Some(MissReason::DefinitionChanged {
            changes: vec![DefinitionChange::Field {
                name: "command".into(),
                old: Some("add 5".into()),
                new: Some("add 6".into()),
            }],
        })
    );
    // On another input, an op is at a new place: nothing to compare it with.
    solve(&scheduler, build(7, 200), "top").await.unwrap();
    assert_eq!(reason("a"), Some(MissReason::NoRecord));
}

#[tokio::test]
async fn the_history_is_loaded_from_and_saved_to_the_cache() {
    #[derive(Default)]
    struct Saved(Mutex<Vec<u8>>);
    impl CacheStore<u64> for Saved {
        fn load(&self, _: &CacheKey) -> BoxFuture<'static, Result<Option<Vec<u64>>, OpError>> {
            async { Ok(None) }.boxed()
        }
        fn save(&self, _: &CacheKey, _: &[u64]) -> BoxFuture<'static, Result<(), OpError>> {
            async { Ok(()) }.boxed()
        }
        fn load_history(&self) -> History {
            History::from_json(&lock(&self.0))
        }
        fn save_history(&self, history: &mut History) {
            *lock(&self.0) = history.to_json();
        }
    }
    let saved = Arc::new(Saved::default());
    let mut t = TestGraph::new();
    t.sum("a", 1, &[]);
    let first = Scheduler::builder().cache(saved.clone()).build();
    solve(&first, Arc::new(t.graph), "a").await.unwrap();
    // A new scheduler (a new process) reads what the first one kept.
    let second = Scheduler::builder().cache(saved).build();
    assert_eq!(
        second.history().miss("a").map(|m| &m.reason),
        Some(&MissReason::NoRecord)
    );
}

#[tokio::test]
async fn first_failure_cancels_the_rest_and_names_the_vertex() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut t = TestGraph::new();
    t.add("slow", 1, &[], |op| {
        op.sleep = Duration::from_secs(30);
        op.dropped = Some(dropped.clone());
    })
    .add("bad", 1, &[], |op| {
        op.sleep = Duration::from_millis(20);
        op.fail = true;
    })
    .sum("top", 0, &["slow", "bad"]);
    let scheduler = Scheduler::builder().max_parallel_exec(4).build();
    let started = Instant::now();
    let err = solve(&scheduler, Arc::new(t.graph), "top")
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(&**err.vertex(), "bad");
    assert_eq!(err.to_string(), "bad");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "bad exited with code 1");
    assert!(dropped.load(Ordering::SeqCst), "the slow op was dropped");
}

#[tokio::test]
async fn concurrent_solves_share_equal_vertices() {
    let mut t1 = TestGraph::new();
    t1.add("shared", 1, &[], |op| op.sleep = Duration::from_millis(200))
        .sum("one", 10, &["shared"]);
    let mut t2 = TestGraph::new();
    t2.counters = t1.counters.clone();
    t2.add("shared", 1, &[], |op| op.sleep = Duration::from_millis(200))
        .sum("two", 20, &["shared"]);
    let counters = t1.counters.clone();
    let scheduler = Scheduler::builder().build();
    let (a, b) = tokio::join!(
        solve(&scheduler, Arc::new(t1.graph), "one"),
        solve(&scheduler, Arc::new(t2.graph), "two"),
    );
    assert_eq!((a.unwrap(), b.unwrap()), (11, 21));
    assert_eq!(counters.execs("shared"), 1);
}

#[tokio::test]
async fn schedulers_sharing_work_run_a_step_both_miss_once_and_share_the_exec_bound() {
    // Two sessions' schedulers (a daemon's two clients): their graphs and caches are their
    // own objects, the store behind the caches is one.
    let store = Arc::new(MemCache::default());
    let shared = SharedWork::new(1, 16);
    let build = |graph: TestGraph| {
        let scheduler = Scheduler::builder()
            .cache(store.clone())
            .shared(shared.clone())
            .build();
        (scheduler, Arc::new(graph.graph))
    };
    let mut t1 = TestGraph::new();
    t1.add("slow", 1, &[], |op| op.sleep = Duration::from_millis(300))
        .add("one", 10, &["slow"], |op| {
            op.sleep = Duration::from_millis(100);
        });
    let mut t2 = TestGraph::new();
    t2.counters = t1.counters.clone();
    t2.add("slow", 1, &[], |op| op.sleep = Duration::from_millis(300))
        .add("two", 20, &["slow"], |op| {
            op.sleep = Duration::from_millis(100);
        });
    let counters = t1.counters.clone();
    let ((s1, g1), (s2, g2)) = (build(t1), build(t2));
    let (r1, r2) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let (a, b) = tokio::join!(
        s1.solve(g1, target("one"), r1.clone()),
        s2.solve(g2, target("two"), r2.clone()),
    );
    assert_eq!((a.unwrap(), b.unwrap()), (11, 21));
    // The step both missed ran once; the other solve took it from the cache.
    assert_eq!(counters.execs("slow"), 1);
    let mut cached = [r1.cached(), r2.cached()].concat();
    cached.sort();
    assert_eq!(cached, ["slow"]);
    // One exec bound for both schedulers.
    assert_eq!(counters.max_running.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn equal_work_under_two_digests_runs_once() {
    // Two vertices (two stages' equal `RUN`s) with one cache key: the second waits for the
    // first and takes its result from the cache.
    let mut t = TestGraph::new();
    for leaf in ["a", "b"] {
        t.add(leaf, 5, &[], |op| op.sleep = Duration::from_millis(100));
    }
    t.sum("top", 0, &["a", "b"]);
    let counters = t.counters.clone();
    let scheduler = Scheduler::builder()
        .cache(Arc::new(MemCache::default()))
        .build();
    assert_eq!(
        solve(&scheduler, Arc::new(t.graph), "top").await.unwrap(),
        10
    );
    assert_eq!(counters.execs("a") + counters.execs("b"), 1);
}

#[tokio::test]
async fn missing_vertex_and_output_are_errors() {
    let mut t = TestGraph::new();
    t.sum("top", 0, &["nowhere"]);
    let scheduler = Scheduler::builder().build();
    let graph = Arc::new(t.graph);
    let err = solve(&scheduler, graph.clone(), "top").await.unwrap_err();
    assert!(matches!(err, SolveError::MissingVertex { ref vertex } if &**vertex == "nowhere"));

    let mut t = TestGraph::new();
    t.sum("a", 0, &[]);
    let edge = Edge {
        vertex: "a".into(),
        output: 3,
    };
    let err = scheduler
        .solve(Arc::new(t.graph), edge, Arc::new(NoReporter))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "vertex a (a) has 1 outputs, not 3");
}

#[tokio::test]
async fn logs_and_lifecycle_are_reported() {
    let mut t = TestGraph::new();
    t.sum("a", 1, &[]);
    let recorder = Arc::new(Recorder::default());
    Scheduler::builder()
        .build()
        .solve(Arc::new(t.graph), target("a"), recorder.clone())
        .await
        .unwrap();
    let events = lock(&recorder.0);
    assert!(matches!(
        &events[0],
        Event::Missed { vertex, reason: MissReason::NoRecord } if &**vertex == "a"
    ));
    assert!(matches!(&events[1], Event::Started { name, .. } if name == "a"));
    assert!(matches!(&events[2], Event::Log { stream: 1, data, .. } if data == b"a"));
    assert!(matches!(&events[3], Event::Completed { name, .. } if name == "a"));
    assert_eq!(events.len(), 4);
}

#[test]
fn ignoring_the_cache_is_decided_once_for_deep_chains() {
    let mut t = TestGraph::new();
    let names: Vec<String> = (0..5000).map(|i| format!("v{i}")).collect();
    t.sum(&names[0], 1, &[]);
    for i in 1..names.len() {
        t.sum(&names[i], 1, &[names[i - 1].as_str()]);
    }
    t.sum("apart", 1, &[]);
    let mut graph = t.graph;
    graph.vertices.get_mut("v10").unwrap().ignore_cache = true;
    assert!(graph.ignores_cache("v4999"));
    assert!(graph.ignores_cache("v10"));
    assert!(!graph.ignores_cache("v9"));
    assert!(!graph.ignores_cache("apart"));
}
