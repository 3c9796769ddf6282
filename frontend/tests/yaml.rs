//! The kiln.yaml frontend: every `examples/yaml/NAME/` pair converts to the same LLB ops and
//! image configuration as its Dockerfile twin, and errors name `kiln.yaml:LINE:COL`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_frontend::testing::FakeResolver;
use kiln_frontend::{ConvertOptions, Converted, convert, convert_yaml};
use kiln_llb::pb;
use kiln_llb::pb::op::Op;
use kiln_llb::prost::Message as _;

const DIGEST: &str = "sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89";
const BASE: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"base"}]}"#;

fn resolver() -> FakeResolver {
    FakeResolver::default()
        .fallback(DIGEST, BASE)
        .unknown("missing")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/yaml")
}

/// `NAME=VALUE` lines of an example's `build-args` file.
fn build_args(dir: &Path) -> BTreeMap<String, String> {
    match fs_err::read_to_string(dir.join("build-args")) {
        Ok(text) => text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn options(file_name: &str, build_args: BTreeMap<String, String>) -> ConvertOptions {
    ConvertOptions {
        file_name: file_name.to_owned(),
        build_args,
        local_unique: Some("fixed".to_owned()),
        ..ConvertOptions::default()
    }
}

fn yaml(text: &str) -> Result<Converted, String> {
    convert_yaml(
        text.as_bytes(),
        &options("kiln.yaml", BTreeMap::new()),
        &resolver(),
    )
    .map_err(|e| e.to_string())
}

fn err(text: &str) -> String {
    yaml(text).map(|_| ()).unwrap_err()
}

fn ops(c: &Converted) -> Vec<pb::Op> {
    c.definition
        .def
        .iter()
        .map(|bytes| pb::Op::decode(bytes.as_slice()).unwrap())
        .collect()
}

fn execs(c: &Converted) -> Vec<pb::ExecOp> {
    ops(c)
        .into_iter()
        .filter_map(|o| match o.op {
            Some(Op::Exec(e)) => Some(e),
            _ => None,
        })
        .collect()
}

#[test]
fn every_example_converts_as_its_dockerfile_twin() {
    let mut names = Vec::new();
    for entry in fs_err::read_dir(examples()).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let args = build_args(&dir);
        for overrides in [BTreeMap::new(), args.clone()] {
            let from_yaml = convert_yaml(
                &fs_err::read(dir.join("kiln.yaml")).unwrap(),
                &options("kiln.yaml", overrides.clone()),
                &resolver(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let from_dockerfile = convert(
                &fs_err::read(dir.join("Dockerfile")).unwrap(),
                &options("Dockerfile", overrides),
                &resolver(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                ops(&from_yaml),
                ops(&from_dockerfile),
                "{name}: the ops differ"
            );
            assert_eq!(
                from_yaml.definition.def, from_dockerfile.definition.def,
                "{name}"
            );
            assert_eq!(
                from_yaml.config.config, from_dockerfile.config.config,
                "{name}: the image configurations differ"
            );
            assert_eq!(from_yaml.config.rootfs, from_dockerfile.config.rootfs);
            let layers = |c: &Converted| -> Vec<bool> {
                c.config.history.iter().map(|h| h.empty_layer).collect()
            };
            assert_eq!(layers(&from_yaml), layers(&from_dockerfile), "{name}");
        }
        names.push(name);
    }
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
}

#[test]
fn build_args_reach_run_steps_and_fields_but_not_run_text() {
    let text = "apiVersion: kiln/v1\nargs: {GREETING: hi, DIR: /out}\nstages:\n  main:\n    from: busybox\n    workdir: ${DIR}\n    steps:\n      - run: echo $GREETING ${NOT_DEFINED_ANYWHERE} > x\n";
    let c = yaml(text).unwrap();
    let meta = execs(&c)[0].meta.clone().unwrap();
    assert_eq!(
        meta.args,
        [
            "/bin/sh",
            "-c",
            "echo $GREETING ${NOT_DEFINED_ANYWHERE} > x"
        ]
    );
    assert!(
        meta.env.contains(&"GREETING=hi".to_owned()),
        "{:?}",
        meta.env
    );
    assert_eq!(meta.cwd, "/out");
    // Build arguments are not in the image.
    assert!(
        !c.config
            .config
            .env
            .iter()
            .any(|e| e.starts_with("GREETING"))
    );

    let overridden = convert_yaml(
        text.as_bytes(),
        &options(
            "kiln.yaml",
            BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        ),
        &resolver(),
    )
    .unwrap();
    let meta = execs(&overridden)[0].meta.clone().unwrap();
    assert!(meta.env.contains(&"GREETING=hello".to_owned()));
}

#[test]
fn quotes_in_fields_are_kept_as_written() {
    let c = yaml(
        "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\nimage:\n  labels: {quote: \"it's \\\"x\\\"\"}\n  env: {ESCAPED: \"\\\\$HOME\"}\n",
    )
    .unwrap();
    assert_eq!(c.config.config.labels["quote"], "it's \"x\"");
    assert!(c.config.config.env.contains(&"ESCAPED=$HOME".to_owned()));
}

#[test]
fn target_comes_from_the_image_key_or_the_option() {
    let text = "apiVersion: kiln/v1\nstages:\n  one:\n    from: busybox\n    steps: [{run: echo one}]\n  two:\n    from: busybox\n    steps: [{run: echo two}]\nimage:\n  target: one\n  cmd: [one]\n";
    let c = yaml(text).unwrap();
    assert_eq!(
        execs(&c)[0].meta.as_ref().unwrap().args,
        ["/bin/sh", "-c", "echo one"]
    );
    assert_eq!(c.config.config.cmd, Some(vec!["one".to_owned()]));
    let mut o = options("kiln.yaml", BTreeMap::new());
    o.target = Some("two".to_owned());
    let c = convert_yaml(text.as_bytes(), &o, &resolver()).unwrap();
    assert_eq!(
        execs(&c)[0].meta.as_ref().unwrap().args,
        ["/bin/sh", "-c", "echo two"]
    );
    // `image` applies to its target stage only.
    assert_eq!(c.config.config.cmd, Some(vec!["sh".to_owned()]));
    o.target = Some("tow".to_owned());
    let e = convert_yaml(text.as_bytes(), &o, &resolver()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kiln.yaml: target stage \"tow\" could not be found (did you mean two?)"
    );
}

#[test]
fn unknown_keys_name_their_place_and_the_key_meant() {
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - copy: {src: x, dset: /y}\n"
        ),
        "kiln.yaml:6:24: unknown key \"dset\" (did you mean dest?)"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    stpes: []\n"),
        "kiln.yaml:5:5: unknown key \"stpes\" (did you mean steps?)"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstage: {}\n"),
        "kiln.yaml:2:1: unknown key \"stage\" (did you mean stages?)"
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - run: x\n        mounts: [{type: cache, targte: /c}]\n"
        ),
        "kiln.yaml:7:32: unknown key \"targte\" (did you mean target?)"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  a: {from: busybox}\nimage:\n  helthcheck: {}\n"),
        "kiln.yaml:5:3: unknown key \"helthcheck\" (did you mean healthcheck?)"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  a: {from: busybox}\nfrobnicate: 1\n"),
        "kiln.yaml:4:1: unknown key \"frobnicate\""
    );
}

#[test]
fn schema_violations_name_their_place() {
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - copy: {src: x, dest: /y, link: \"yes\"}\n"
        ),
        "kiln.yaml:6:40: link: \"yes\" is not of type \"boolean\""
    );
    assert_eq!(
        err("apiVersion: kiln/v2\nstages: {a: {from: x}}\n"),
        "kiln.yaml:1:13: apiVersion: \"kiln/v1\" was expected"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  a:\n    steps: []\n"),
        "kiln.yaml:4:5: a: \"from\" is a required property"
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - run: {x: 1}\n"
        ),
        "kiln.yaml:6:14: run: expected a string or a list of strings"
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - run: x\n        network: bridge\n"
        ),
        "kiln.yaml:7:18: network: \"bridge\" is not one of \"default\", \"none\" or \"host\""
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - copy: {src: x, dest: /y}\n        network: none\n"
        ),
        "kiln.yaml:6:9: \"run\" is a required property"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    env: {\"A=B\": x}\n"),
        "kiln.yaml:5:11: \"A=B\" is not a variable name (no '=' or white space)"
    );
    // `1.20` would be the float 1.2: quoting is asked for, not guessed.
    assert_eq!(
        err("apiVersion: kiln/v1\nargs: {GO_VERSION: 1.20}\nstages:\n  a: {from: busybox}\n"),
        "kiln.yaml:2:20: GO_VERSION: 1.2 is not of types \"boolean\", \"integer\", \"string\" (quote it to keep the text as written)"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nargs:\n  1X: y\nstages:\n  a: {from: busybox}\n"),
        "kiln.yaml:3:3: \"1X\" is not an argument name (letters, digits and '_', not starting with a digit)"
    );
}

#[test]
fn lowering_errors_name_their_place() {
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  Build:\n    from: busybox\n"),
        "kiln.yaml:3:3: invalid stage name \"Build\": a stage name is lower-case letters, digits, '-', '_' and '.', starting with a letter"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  context:\n    from: busybox\n"),
        "kiln.yaml:3:3: the stage name \"context\" is reserved for the build context"
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - {run: x, copy: {src: a, dest: b}}\n"
        ),
        "kiln.yaml:6:9: a step has exactly one of run, copy, add, env, workdir, user; this one has run, copy"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  build: {from: busybox}\nimage: {target: biuld}\n"),
        "kiln.yaml:4:17: target stage \"biuld\" could not be found (did you mean build?)"
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a: {from: busybox}\nimage:\n  healthcheck: {test: [x], interval: 1us}\n"
        ),
        "kiln.yaml:5:38: Interval \"interval\" cannot be less than 1ms"
    );
}

#[test]
fn undefined_variables_are_errors_at_their_field() {
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox:${TAG}\n"),
        "kiln.yaml:4:11: failed to process \"busybox:${TAG}\": undefined variable \"TAG\""
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nargs: {A: x}\nstages:\n  a:\n    from: busybox\n    steps:\n      - copy: {src: \"$A\", dest: \"/${B}/\"}\n"
        ),
        "kiln.yaml:7:33: failed to process \"/${B}/\": undefined variable \"B\""
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a: {from: busybox}\nimage:\n  labels: {v: \"${VERSION}\"}\n"
        ),
        "kiln.yaml:5:15: failed to process \"${VERSION}\": undefined variable \"VERSION\""
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nargs: {A: \"${B}\"}\nstages:\n  a: {from: busybox}\n"),
        "kiln.yaml:2:11: failed to process \"${B}\": undefined variable \"B\""
    );
    // A default, or the base image's environment, defines it.
    yaml("apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox:${TAG:-latest}\n    workdir: /x${PATH:+/y}\n").unwrap();
}

#[test]
fn conversion_errors_name_the_step() {
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - run: x\n        mounts: [{type: cache}]\n"
        ),
        "kiln.yaml:6:9: invalid mount target \"/\""
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - run: x\n        mounts:\n          - {type: bind, target: /b}\n          - {type: secret, id: s, sharing: locked}\n"
        ),
        "kiln.yaml:9:13: secret mount should not define sharing"
    );
    // With a variable, the mount is checked when converting, at its step.
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nargs: {T: x}\nstages:\n  a:\n    from: busybox\n    steps:\n      - run: x\n        mounts: [{type: secret, id: $T, sharing: locked}]\n"
        ),
        "kiln.yaml:7:9: secret mount should not define sharing"
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - copy: {from: b, src: /x, dest: /y}\n  b:\n    from: busybox\n"
        ),
        "kiln.yaml:6:22: stage \"b\" is defined later in the file: a stage can use only the stages before it"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  a:\n    from: a\n"),
        "kiln.yaml:4:11: stage \"a\" is defined later in the file: a stage can use only the stages before it"
    );
    assert_eq!(
        err(
            "apiVersion: kiln/v1\nstages:\n  a:\n    from: busybox\n    steps:\n      - run: x\n        mounts: [{type: bind, from: b, target: /b}]\n  b:\n    from: busybox\n"
        ),
        "kiln.yaml:7:37: stage \"b\" is defined later in the file: a stage can use only the stages before it"
    );
    assert_eq!(
        err("apiVersion: kiln/v1\nstages:\n  a:\n    from: missing\n"),
        "kiln.yaml:4:11: missing: manifest unknown"
    );
}
