#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

//! Metadata costs: where the time of a solver vertex's store calls goes.
//!
//! `raw/*` measures the parts (opening and closing the redb database, a durable and a
//! non-durable commit, a `syncfs`); `store/*` measures the `Store` calls the solver makes for
//! each vertex (cache record save, load and touch; snapshot prepare + commit).
//!
//! Run with `cargo bench -p kiln-cache --bench meta`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_cache::{CacheRecord, Store};
use redb::{Durability, TableDefinition};

const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("bench");

fn record(id: String) -> CacheRecord {
    CacheRecord {
        id,
        description: "a step".to_owned(),
        blobs: Vec::new(),
        snapshots: vec!["file-0123456789abcdef".to_owned()],
        size: 0,
        created: 1,
        last_used: 1,
    }
}

fn raw(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.redb");
    drop(redb::Database::create(&path).unwrap());
    let mut group = c.benchmark_group("raw");
    group.bench_function("redb_open_close", |b| {
        b.iter(|| drop(black_box(redb::Database::create(&path).unwrap())));
    });
    let db = redb::Database::create(&path).unwrap();
    for (name, durability) in [
        ("redb_commit_immediate", Durability::Immediate),
        ("redb_commit_none", Durability::None),
    ] {
        let mut i = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let mut txn = db.begin_write().unwrap();
                txn.set_durability(durability);
                txn.open_table(TABLE)
                    .unwrap()
                    .insert(i.to_string().as_str(), [7u8; 200].as_slice())
                    .unwrap();
                txn.commit().unwrap();
            });
        });
    }
    drop(db);
    let root = fs_err::File::open(dir.path()).unwrap();
    group.bench_function("syncfs", |b| {
        b.iter(|| nix::unistd::syncfs(&root).unwrap());
    });
    group.bench_function("json_encode_record", |b| {
        let r = record("sha256:0123".to_owned());
        b.iter(|| serde_json::to_vec(black_box(&r)).unwrap());
    });
    group.finish();
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut group = c.benchmark_group("store");
    let mut i = 0u64;
    group.bench_function("put_cache_record", |b| {
        b.iter(|| {
            i += 1;
            store.put_cache_record(&record(format!("key-{i}"))).unwrap();
        });
    });
    group.bench_function("cache_record", |b| {
        b.iter(|| store.cache_record(black_box("key-1")).unwrap().unwrap());
    });
    group.bench_function("touch_cache_record", |b| {
        b.iter(|| assert!(store.touch_cache_record("key-1").unwrap()));
    });
    let mut n = 0u64;
    group.bench_function("prepare_commit", |b| {
        b.iter(|| {
            n += 1;
            let active = format!("active-{n}");
            let mounts = store.prepare(&active, None).unwrap();
            fs_err::write(mounts.upper.join("file"), b"data").unwrap();
            store.commit(&active, &format!("file-{n}")).unwrap();
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = raw, store
}
criterion_main!(benches);
