//! Issue 19: a build that explains itself. `kiln history` lists the builds of a store,
//! `kiln explain` says why each step ran (the changed file, the changed build arg, the
//! input step, `--no-cache`), `kiln prune --history` forgets them, and `--iidfile` /
//! `--metadata-file` say what the build made.

use std::path::Path;
use std::process::Output;

use crate::common::{assert_ok, kiln_in, ready, text};

const DOCKERFILE: &str = "FROM busybox\n\
ARG V=0\n\
COPY app.txt /app.txt\n\
RUN cat /app.txt > /out.txt && echo \"$V\" >> /out.txt\n";

/// Builds `DIR/ctx` (the Dockerfile above, `app.txt` holding `app`) with `extra` flags.
fn build(dir: &Path, app: &str, extra: &[&str]) -> Output {
    let context = dir.join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("Dockerfile"), DOCKERFILE).unwrap();
    fs_err::write(context.join("app.txt"), app).unwrap();
    let context = context.to_string_lossy().into_owned();
    let mut args = vec!["build"];
    if !extra.contains(&"-q") {
        args.push("--progress=plain");
    }
    args.extend_from_slice(extra);
    args.push(&context);
    kiln_in(dir, &args, &[])
}

fn json(output: Output) -> serde_json::Value {
    let output = assert_ok(output);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)))
}

/// The steps `kiln explain --format json` lists for the last build.
fn explained(dir: &Path) -> Vec<serde_json::Value> {
    let document = json(kiln_in(dir, &["explain", "--format", "json"], &[]));
    document["steps"].as_array().unwrap().clone()
}

/// The explained step whose name contains `part`.
fn step<'a>(steps: &'a [serde_json::Value], part: &str) -> &'a serde_json::Value {
    steps
        .iter()
        .find(|s| s["name"].as_str().unwrap().contains(part))
        .unwrap_or_else(|| panic!("no step {part:?} in {steps:#?}"))
}

#[test]
fn explain_names_the_changed_file_build_arg_and_no_cache() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    assert_ok(build(dir, "one", &["--build-arg", "V=1"]));
    let steps = explained(dir);
    assert_eq!(step(&steps, "RUN cat")["reason"]["kind"], "no-record");

    // The same build again: everything cached, nothing to explain.
    assert_ok(build(dir, "one", &["--build-arg", "V=1"]));
    assert_eq!(explained(dir), Vec::<serde_json::Value>::new());

    // A file of the context changes: the context names it, and the COPY names the context.
    assert_ok(build(dir, "three", &["--build-arg", "V=1"]));
    let steps = explained(dir);
    let context = steps
        .iter()
        .find(|s| s["reason"]["kind"] == "content-changed")
        .unwrap_or_else(|| panic!("{steps:#?}"));
    assert_eq!(context["reason"]["file"], "app.txt");
    let change = &context["reason"]["change"];
    assert_eq!(change["change"], "modified", "{context:#}");
    assert_eq!(
        (change["old_size"].as_u64(), change["new_size"].as_u64()),
        (Some(3), Some(5))
    );
    assert_ne!(change["old_sha256"], change["new_sha256"]);
    let context_name = context["name"].as_str().unwrap();
    let copy = step(&steps, "COPY app.txt");
    assert_eq!(copy["reason"]["kind"], "input-changed");
    assert_eq!(
        copy["explanation"],
        format!("its input {context_name:?} changed")
    );
    let run = step(&steps, "RUN cat");
    assert!(
        run["explanation"]
            .as_str()
            .unwrap()
            .contains("COPY app.txt"),
        "{run:#}"
    );

    // A build arg changes: the RUN that reads it says which.
    let trace = dir.join("trace.json");
    let dot = dir.join("graph.dot");
    let output = assert_ok(build(
        dir,
        "three",
        &[
            "--build-arg",
            "V=2",
            "--explain",
            "--trace",
            &trace.to_string_lossy(),
            "--dot",
            &dot.to_string_lossy(),
        ],
    ));
    let steps = explained(dir);
    let run = step(&steps, "RUN cat");
    assert_eq!(run["reason"]["kind"], "definition-changed");
    assert_eq!(run["reason"]["changes"][0]["name"], "V");
    assert_eq!(run["explanation"], "build arg V changed");
    assert_eq!(steps.len(), 1, "{steps:#?}");
    // `--explain` said so after the build, under the plain progress's summary.
    let said = text(&output);
    assert!(said.contains("  ran: build arg V changed\n"), "{said}");
    assert!(said.contains(" on the critical path ("), "{said}");
    assert!(said.contains("#summary slow: "), "{said}");
    // The trace has a span per step of the build's record; the graph a node per step.
    let record = json(kiln_in(dir, &["history", "--format", "json"], &[]))[0].clone();
    let record_steps = record["steps"].as_array().unwrap();
    let trace: serde_json::Value = serde_json::from_slice(&fs_err::read(&trace).unwrap()).unwrap();
    let spans: Vec<&serde_json::Value> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "vertex")
        .collect();
    assert_eq!(spans.len(), record_steps.len());
    for step in record_steps {
        assert!(
            spans.iter().any(|s| s["args"]["vertex"] == step["vertex"]),
            "{step:#}"
        );
    }
    let dot = fs_err::read_to_string(&dot).unwrap();
    assert!(dot.starts_with("digraph build {"), "{dot}");
    assert_eq!(
        dot.matches("fillcolor=").count(),
        record_steps.len(),
        "{dot}"
    );
    assert!(dot.contains("fillcolor=\"palegreen\""), "{dot}");
    assert!(dot.contains(" -> "), "{dot}");

    // --no-cache: every step ran, ignoring the cache.
    assert_ok(build(dir, "three", &["--build-arg", "V=2", "--no-cache"]));
    let steps = explained(dir);
    assert!(steps.len() >= 3, "{steps:#?}");
    for step in &steps {
        assert_eq!(step["reason"]["kind"], "ignored", "{step:#}");
    }

    // The history lists the five builds, newest first; an older one is still explained.
    let builds = json(kiln_in(dir, &["history", "--format", "json"], &[]));
    let builds = builds.as_array().unwrap();
    assert_eq!(builds.len(), 5);
    assert_eq!(builds[0]["status"], "completed");
    let second = builds[3]["id"].as_str().unwrap();
    let old = json(kiln_in(dir, &["explain", "--format", "json", second], &[]));
    assert_eq!(old["steps"], serde_json::json!([]));
    assert_eq!(old["cached"], old["steps_total"]);
    let table = assert_ok(kiln_in(dir, &["history"], &[]));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.starts_with("BUILD ID "), "{table}");
    assert!(table.contains(second), "{table}");
    assert_eq!(table.lines().count(), 6, "{table}");
    let text_explained = assert_ok(kiln_in(dir, &["explain", "^1"], &[]));
    assert!(
        String::from_utf8_lossy(&text_explained.stdout).contains("ran: build arg V changed"),
        "{}",
        text(&text_explained)
    );

    // prune --history forgets them.
    let pruned = assert_ok(kiln_in(dir, &["prune", "--history", "-f"], &[]));
    assert_eq!(
        String::from_utf8_lossy(&pruned.stdout),
        "Deleted 5 build records\n"
    );
    let output = kiln_in(dir, &["explain"], &[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("no build is recorded in this store"),
        "{}",
        text(&output)
    );
}

#[test]
fn explain_names_the_changed_command_and_copy_destination_of_a_step() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let context = dir.join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("a.txt"), "a").unwrap();
    let build = |dest: &str, run: &str| {
        let dockerfile = format!("FROM busybox\nCOPY a.txt {dest}\nRUN {run}\n");
        fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
        assert_ok(kiln_in(
            dir,
            &["build", "--progress=plain", &context.to_string_lossy()],
            &[],
        ));
        explained(dir)
    };
    build("/x.txt", "ls / > /out");

    // The command of the RUN changes: it is compared with the RUN that ran there before.
    let steps = build("/x.txt", "ls / > /out && echo more >> /out");
    assert_eq!(steps.len(), 1, "{steps:#?}");
    let run = step(&steps, "RUN ls");
    assert_eq!(run["reason"]["kind"], "definition-changed", "{run:#}");
    let change = &run["reason"]["changes"][0];
    assert_eq!(change["kind"], "field");
    assert_eq!(change["name"], "command");
    assert_eq!(change["old"], "/bin/sh -c 'ls / > /out'");
    assert_eq!(
        change["new"],
        "/bin/sh -c 'ls / > /out && echo more >> /out'"
    );
    assert_eq!(
        run["explanation"],
        "its command changed from /bin/sh -c 'ls / > /out' \
         to /bin/sh -c 'ls / > /out && echo more >> /out'"
    );

    // The COPY writes elsewhere: its action names both; the RUN after it names the COPY.
    let steps = build("/y.txt", "ls / > /out && echo more >> /out");
    let copy = step(&steps, "COPY a.txt");
    assert_eq!(copy["reason"]["kind"], "definition-changed", "{copy:#}");
    let change = &copy["reason"]["changes"][0];
    assert_eq!(change["name"], "action 1", "{copy:#}");
    let (old, new) = (
        change["old"].as_str().unwrap(),
        change["new"].as_str().unwrap(),
    );
    assert!(old.starts_with("copy /a.txt -> /x.txt"), "{old}");
    assert!(new.starts_with("copy /a.txt -> /y.txt"), "{new}");
    let run = step(&steps, "RUN ls");
    assert_eq!(run["reason"]["kind"], "input-changed", "{run:#}");
}

#[test]
fn the_trace_has_each_step_s_phases_with_their_bytes_and_counters() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let trace = dir.join("trace.json");
    assert_ok(build(
        dir,
        "four",
        &["-t", "traced", "--trace", &trace.to_string_lossy()],
    ));
    let trace: serde_json::Value = serde_json::from_slice(&fs_err::read(&trace).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    // The thread of each step, by its name.
    let thread = |part: &str| {
        events
            .iter()
            .find(|e| {
                e["name"] == "thread_name" && e["args"]["name"].as_str().unwrap().contains(part)
            })
            .unwrap_or_else(|| panic!("no step {part:?}"))["tid"]
            .clone()
    };
    let phases = |part: &str| -> Vec<(String, Option<u64>)> {
        let tid = thread(part);
        events
            .iter()
            .filter(|e| e["cat"] == "phase" && e["tid"] == tid)
            .filter(|e| e["name"] != "queued" && e["name"] != "running")
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["args"]["bytes"].as_u64(),
                )
            })
            .collect()
    };
    // The base image: its layers' compressed bytes downloaded, then unpacked.
    let manifest = kiln_testdata::busybox_layout()
        .join("blobs/sha256")
        .join(&kiln_testdata::BUSYBOX_MANIFEST_DIGEST["sha256:".len()..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs_err::read(manifest).unwrap()).unwrap();
    let layers: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(
        phases("busybox"),
        [
            ("pull".to_owned(), Some(layers)),
            ("unpack".to_owned(), Some(layers))
        ]
    );
    // The context (the files the COPY reads, app.txt): checksummed, then copied in.
    let context = "four".len() as u64;
    assert_eq!(
        phases("load build context"),
        [
            ("checksum".to_owned(), Some(context)),
            ("transfer".to_owned(), Some(context))
        ]
    );
    let names = |part: &str| -> Vec<String> { phases(part).into_iter().map(|p| p.0).collect() };
    assert_eq!(names("COPY app.txt"), ["files"]);
    assert_eq!(names("RUN cat"), ["mounts", "run", "commit"]);
    // Counters: one process at most, and the bytes moved by kind.
    let counters = |name: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["ph"] == "C" && e["name"] == name)
            .map(|e| &e["args"])
            .collect()
    };
    let processes: Vec<i64> = counters("processes")
        .iter()
        .map(|a| a["processes"].as_i64().unwrap())
        .collect();
    assert_eq!(processes, [1, 0]);
    let last = counters("bytes").last().copied().unwrap().clone();
    assert_eq!(last["pull"], layers);
    assert_eq!(last["transfer"], context);
    // The export (`-t`) follows the steps on its own track, as the record says.
    let record = json(kiln_in(dir, &["history", "--format", "json"], &[]))[0].clone();
    let exporting: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["cat"] == "export").collect();
    assert_eq!(exporting.len(), 1, "{exporting:#?}");
    assert_eq!(exporting[0]["tid"], thread("export"));
    assert_eq!(
        exporting[0]["ts"].as_u64(),
        record["duration_ms"].as_u64().map(|ms| ms * 1000)
    );
    assert_eq!(
        exporting[0]["dur"].as_u64(),
        record["export_ms"].as_u64().map(|ms| ms * 1000)
    );
    // Its phases: `-t` computes the new layers' diff IDs, compresses nothing.
    assert_eq!(export_phases(events), [("diff".to_owned(), None)]);

    // Written as an OCI layout, the same image's two new layers are compressed: the phase
    // counts their blobs' bytes.
    let layout = dir.join("layout");
    let traced = dir.join("oci-trace.json");
    let output = format!("type=oci,dest={},tar=false", layout.display());
    assert_ok(build(
        dir,
        "four",
        &["--output", &output, "--trace", &traced.to_string_lossy()],
    ));
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &serde_json::Value| -> serde_json::Value {
        let digest = digest.as_str().unwrap();
        let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
        serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
    };
    let image = blob(&index["manifests"][0]["digest"]);
    let base: Vec<&serde_json::Value> = manifest["layers"].as_array().unwrap().iter().collect();
    let new_layers: Vec<u64> = image["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !base.iter().any(|b| b["digest"] == l["digest"]))
        .map(|l| l["size"].as_u64().unwrap())
        .collect();
    assert_eq!(new_layers.len(), 2, "{image:#}");
    let traced: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&traced).unwrap()).unwrap();
    let traced = traced["traceEvents"].as_array().unwrap();
    assert_eq!(
        export_phases(traced),
        [("compress".to_owned(), Some(new_layers.iter().sum()))]
    );

    // Pushed, the blobs made for the layout are sent as they are: a push, no compression.
    let pushed = dir.join("push-trace.json");
    assert_ok(build(
        dir,
        "four",
        &[
            "--output",
            "type=image,name=127.0.0.1:5000/kiln-trace/app:1,push=true",
            "--trace",
            &pushed.to_string_lossy(),
        ],
    ));
    let pushed: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&pushed).unwrap()).unwrap();
    let pushed = pushed["traceEvents"].as_array().unwrap();
    assert_eq!(export_phases(pushed), [("push".to_owned(), None)]);
}

/// The phases on a trace's export track, with their bytes.
fn export_phases(events: &[serde_json::Value]) -> Vec<(String, Option<u64>)> {
    let export = events
        .iter()
        .find(|e| e["cat"] == "export")
        .expect("an export span");
    events
        .iter()
        .filter(|e| e["cat"] == "phase" && e["tid"] == export["tid"])
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["args"]["bytes"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn iidfile_and_metadata_file_name_the_image_and_the_build() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let iid = dir.join("iid");
    let metadata = dir.join("metadata.json");
    let output = build(
        dir,
        "one",
        &[
            "-t",
            "explained:1",
            "--iidfile",
            &iid.to_string_lossy(),
            "--metadata-file",
            &metadata.to_string_lossy(),
        ],
    );
    assert_ok(output);
    let id = fs_err::read_to_string(&iid).unwrap();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id:?}");
    // `kiln images` shows the same id, shortened.
    let images = assert_ok(kiln_in(dir, &["images"], &[]));
    let images = String::from_utf8_lossy(&images.stdout).into_owned();
    let short = &id["sha256:".len().."sha256:".len() + 12];
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("explained ") && l.contains(short)),
        "{images}"
    );
    let document: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&metadata).unwrap()).unwrap();
    assert_eq!(document["containerimage.config.digest"], id.as_str());
    assert_eq!(document["containerimage.digest"], id.as_str());
    assert_eq!(document["image.name"], "docker.io/library/explained:1");
    let builds = json(kiln_in(dir, &["history", "--format", "json"], &[]));
    assert_eq!(
        document["buildx.build.ref"],
        format!("kiln/local/{}", builds[0]["id"].as_str().unwrap())
    );

    // -q prints that id alone.
    let quiet = assert_ok(build(dir, "one", &["-q", "-t", "explained:1"]));
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), format!("{id}\n"));

    // No image, no id: a clear error.
    let out = format!("type=local,dest={}", dir.join("out").display());
    let output = build(
        dir,
        "one",
        &["-o", &out, "--iidfile", &iid.to_string_lossy()],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("--iidfile: the build made no image"),
        "{}",
        text(&output)
    );

    // A build whose export fails is recorded as failed, though every step was cached.
    let file = dir.join("a-file");
    fs_err::write(&file, "").unwrap();
    let out = format!("type=local,dest={}", file.join("sub").display());
    let output = build(dir, "one", &["-o", &out]);
    assert!(!output.status.success(), "{}", text(&output));
    let builds = json(kiln_in(dir, &["history", "--format", "json"], &[]));
    assert_eq!(builds[0]["status"], "failed");
    assert_eq!(builds[1]["status"], "completed");
    let explained = assert_ok(kiln_in(dir, &["explain"], &[]));
    assert!(
        String::from_utf8_lossy(&explained.stdout).contains("Error in ")
            && String::from_utf8_lossy(&explained.stdout)
                .contains("Nothing ran: every step came from the cache.\n"),
        "{}",
        text(&explained)
    );

    // A build that fails before any step (its Dockerfile) is recorded as failed too.
    let broken = dir.join("broken");
    fs_err::create_dir_all(&broken).unwrap();
    fs_err::write(broken.join("Dockerfile"), "FROM busybox\nFROBNICATE now\n").unwrap();
    let output = kiln_in(dir, &["build", &broken.to_string_lossy()], &[]);
    assert!(!output.status.success(), "{}", text(&output));
    let builds = json(kiln_in(dir, &["history", "--format", "json"], &[]));
    assert_eq!(builds.as_array().unwrap().len(), 5);
    assert_eq!(builds[0]["status"], "failed");
    assert_eq!(builds[0]["name"], "broken");
    assert_eq!(builds[0]["steps"], serde_json::json!([]));
    // One refused for its flags before it began is not.
    let output = kiln_in(
        dir,
        &["build", "--no-cache", "--no-cache-filter", "x", "."],
        &[],
    );
    assert!(!output.status.success(), "{}", text(&output));
    let builds = json(kiln_in(dir, &["history", "--format", "json"], &[]));
    assert_eq!(builds.as_array().unwrap().len(), 5);
}

/// A base image whose tag moved: the `FROM` step names the image and both digests, and the
/// `RUN` on it names the `FROM` step.
#[test]
fn serial_explain_names_the_moved_base_image_and_its_digests() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!(
        "127.0.0.1:5000/kiln-test/explain-base:{:x}",
        std::process::id()
    );
    let publish = |marker: &str| {
        let pusher = dir.path().join(format!("pusher-{marker}"));
        let dockerfile = format!("FROM busybox\nRUN echo {marker} > /marker\n");
        assert_ok(crate::build_dockerfile_sources::build(
            &pusher,
            &dockerfile,
            &[],
            &["-t", &name, "--push"],
        ));
    };
    let builder = dir.path().join("builder");
    let dockerfile = format!("FROM {name}\nRUN cat /marker > /seen\n");
    publish("one");
    assert_ok(crate::build_dockerfile_sources::build(
        &builder,
        &dockerfile,
        &[],
        &[],
    ));
    publish("two");
    assert_ok(crate::build_dockerfile_sources::build(
        &builder,
        &dockerfile,
        &[],
        &[],
    ));
    let steps = explained(&builder);
    let from = step(&steps, "FROM 127.0.0.1:5000/kiln-test/explain-base");
    let change = &from["reason"]["changes"][0];
    assert_eq!(change["kind"], "image", "{from:#}");
    assert_eq!(change["reference"], name.as_str());
    let (old, new) = (
        change["old"].as_str().unwrap(),
        change["new"].as_str().unwrap(),
    );
    assert!(old.starts_with("sha256:") && new.starts_with("sha256:") && old != new);
    assert_eq!(
        from["explanation"],
        format!("base image {name} changed from {old} to {new}")
    );
    let from_name = from["name"].as_str().unwrap();
    assert_eq!(
        step(&steps, "RUN cat /marker")["explanation"],
        format!("its input {from_name:?} changed")
    );
}
