//! Frontend images (`# syntax=IMAGE`): kiln runs the image and serves it BuildKit's gateway
//! API. BuildKit's own Dockerfile frontend (testdata/images/dockerfile-frontend, pushed as
//! docker/dockerfile:1 by scripts/test-env.sh) builds, reports errors with their Dockerfile
//! line, and is replaced by the built-in frontend when it cannot be pulled; an image that is not
//! a frontend fails clearly.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{assert_ok, kiln_in, ready, text};

/// The image configuration in the OCI archive `archive`, as skopeo reads it.
fn oci_config(archive: &Path) -> serde_json::Value {
    let inspected = assert_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", archive.display()))
            .output()
            .unwrap(),
    );
    serde_json::from_slice(&inspected.stdout).unwrap()
}

/// Builds `dockerfile` (with `context` files) in `dir` with `extra` flags.
fn build(dir: &Path, dockerfile: &str, files: &[(&str, &str)], extra: &[&str]) -> Output {
    let context = dir.join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        fs_err::write(context.join(name), content).unwrap();
    }
    let mut args = vec!["build", "--progress=plain"];
    args.extend_from_slice(extra);
    let context = context.to_str().unwrap().to_owned();
    args.push(&context);
    kiln_in(dir, &args, &[])
}

#[test]
fn a_syntax_image_builds_through_the_gateway_with_its_options_and_image_config() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = "# syntax=docker/dockerfile:1\n\
        FROM busybox AS base\n\
        ARG GREETING=unset\n\
        COPY hello.txt /hello.txt\n\
        RUN echo \"$GREETING $(cat /hello.txt)\" > /greeting\n\
        ENV APP_MODE=gateway\n\
        CMD [\"cat\", \"/greeting\"]\n\
        FROM base AS other\n\
        RUN echo other > /other\n";
    let out = dir.path().join("out");
    let archive = dir.path().join("image.tar");
    let output = build(
        dir.path(),
        dockerfile,
        &[("hello.txt", "world")],
        &[
            "--target",
            "base",
            "--build-arg",
            "GREETING=hello",
            "--label",
            "built.by=kiln",
            "-o",
            &format!("type=local,dest={}", out.display()),
            "-o",
            &format!("type=oci,dest={}", archive.display()),
        ],
    );
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    // The frontend image ran: its vertex and its own solves show in kiln's progress.
    assert!(shown.contains("[frontend] docker/dockerfile:1"), "{shown}");
    assert!(
        shown.contains("[internal] load build definition from Dockerfile"),
        "{shown}"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("greeting")).unwrap(),
        "hello world\n"
    );
    assert!(!out.join("other").exists(), "--target reached the frontend");
    let config = oci_config(&archive);
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/greeting"])
    );
    assert_eq!(config["config"]["Labels"]["built.by"], "kiln");
    let env = config["config"]["Env"].to_string();
    assert!(env.contains("APP_MODE=gateway"), "{env}");
    assert_eq!(config["architecture"], "amd64");
}

#[test]
fn a_frontend_error_shows_its_dockerfile_line() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = build(
        dir.path(),
        "# syntax=docker/dockerfile:1\nFROM busybox\nFROBNICATE now\n",
        &[],
        &[],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(shown.contains("Dockerfile:3"), "{shown}");
    assert!(shown.contains(">>> FROBNICATE now"), "{shown}");
    assert!(shown.contains("unknown instruction: FROBNICATE"), "{shown}");
}

#[test]
fn the_builtin_frontend_stands_in_for_an_unreachable_stock_one_and_no_other() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // docker.io's mirror refuses connections: docker/dockerfile cannot be pulled.
    let offline = dir.path().join("offline.toml");
    fs_err::write(
        &offline,
        "[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:9\"]\n\
         [registry.\"127.0.0.1:9\"]\nhttp = true\n",
    )
    .unwrap();
    let context = dir.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("data.txt"), "offline\n").unwrap();
    let out = dir.path().join("out");
    let run = |syntax: &str| {
        fs_err::write(
            context.join("Dockerfile"),
            format!("# syntax={syntax}\nFROM scratch\nCOPY data.txt /data.txt\n"),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--config")
            .arg(&offline)
            .args(["build", "--progress=plain", "-o"])
            .arg(format!("type=local,dest={}", out.display()))
            .arg(&context)
            .output()
            .unwrap()
    };
    let output = run("docker/dockerfile:1.7");
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("WARNING: failed to resolve frontend image docker/dockerfile:1.7"),
        "{shown}"
    );
    assert!(
        shown.contains("using kiln's built-in Dockerfile frontend instead"),
        "{shown}"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("data.txt")).unwrap(),
        "offline\n"
    );
    // Any other frontend that cannot be pulled fails the build.
    let output = run("127.0.0.1:9/example/frontend:1");
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains("failed to resolve frontend image 127.0.0.1:9/example/frontend:1"),
        "{shown}"
    );
}

#[test]
fn an_image_that_exits_without_a_result_is_a_clear_error() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A "frontend" that says something and exits: built and pushed by kiln itself.
    let image = format!(
        "127.0.0.1:5000/kiln-test/not-a-frontend:{:x}",
        std::process::id()
    );
    assert_ok(build(
        &dir.path().join("publish"),
        "FROM busybox\nENTRYPOINT [\"sh\", \"-c\", \"echo no gateway here >&2; exit 3\"]\n",
        &[],
        &["-t", &image, "--push"],
    ));
    let output = build(
        &dir.path().join("use"),
        &format!("# syntax={image}\nFROM busybox\n"),
        &[],
        &[],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains(&format!(
            "frontend {image} exited without returning a result (exit code 3):\nno gateway here"
        )),
        "{shown}"
    );

    // One that answers with what is not gRPC, and would then wait forever: its connection
    // ends, and it is killed.
    let hanging = format!("{image}-hanging");
    assert_ok(build(
        &dir.path().join("publish-hanging"),
        "FROM busybox\nENTRYPOINT [\"sh\", \"-c\", \"echo not grpc; echo waiting >&2; sleep 600\"]\n",
        &[],
        &["-t", &hanging, "--push"],
    ));
    let output = build(
        &dir.path().join("use-hanging"),
        &format!("# syntax={hanging}\nFROM busybox\n"),
        &[],
        &[],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains(&format!(
            "frontend {hanging} exited without returning a result (killed: its connection to \
             the builder had ended):\nwaiting"
        )),
        "{shown}"
    );
}

#[test]
fn a_gateway_frontend_forwards_to_the_frontend_its_dockerfile_names() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The stock frontend, named by --frontend gateway.v0, reads `# syntax=` and asks for that
    // frontend in turn (a Solve of gateway.v0), as BuildKit's does.
    let output = build(
        dir.path(),
        "# syntax=docker/dockerfile:1\nFROM busybox\nRUN echo forwarded > /forwarded\n",
        &[],
        &[
            "--frontend",
            "gateway.v0",
            "--opt",
            "source=docker/dockerfile:1",
            "-o",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert_eq!(
        shown.matches("[frontend] docker/dockerfile:1").count(),
        2,
        "{shown}"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("forwarded")).unwrap(),
        "forwarded\n"
    );
    let output = build(
        dir.path(),
        "FROM busybox\n",
        &[],
        &["--frontend", "gateway.v0"],
    );
    assert!(
        text(&output)
            .contains("--frontend gateway.v0 needs the frontend image: --opt source=IMAGE"),
        "{}",
        text(&output)
    );
    let output = build(dir.path(), "FROM busybox\n", &[], &["--opt", "a=b"]);
    assert!(
        text(&output).contains("--opt gives options to a frontend image"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_frontend_command_prints_the_definition_and_writes_the_image_config() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    fs_err::create_dir_all(context.join("gen")).unwrap();
    fs_err::write(
        context.join("gen/Dockerfile"),
        "FROM busybox\nRUN echo generated > /generated\n",
    )
    .unwrap();
    // The generator: kiln itself printing a Definition, its options noted for the test.
    let generator = format!(
        "env | grep '^BUILDKIT_FRONTEND_OPT_' | cut -d= -f2- | sort > {opts} && \
         {kiln} --root {root} --config {config} build --print-llb -f gen/Dockerfile . && \
         printf '{{\"config\":{{\"Cmd\":[\"cat\",\"/generated\"]}}}}' > \"$KILN_FRONTEND_IMAGE_CONFIG\"",
        opts = dir.path().join("opts.txt").display(),
        kiln = env!("CARGO_BIN_EXE_kiln"),
        root = dir.path().join("root").display(),
        config = crate::common::mirror_config(dir.path()).display(),
    );
    let archive = dir.path().join("image.tar");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--progress=plain",
            "--frontend-exec",
            &generator,
            "--build-arg",
            "A=1",
            "--opt",
            "extra=2",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            context.to_str().unwrap(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let opts = fs_err::read_to_string(dir.path().join("opts.txt")).unwrap();
    assert_eq!(opts, "build-arg:A=1\nextra=2\nfilename=Dockerfile\n");
    let config = oci_config(&archive);
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/generated"])
    );

    // A command that fails, or prints something that is no Definition, is a clear error.
    let failing = |command: &str| {
        let output = kiln_in(
            dir.path(),
            &[
                "build",
                "--frontend-exec",
                command,
                context.to_str().unwrap(),
            ],
            &[],
        );
        assert!(!output.status.success());
        text(&output)
    };
    let shown = failing("exit 4");
    assert!(
        shown.contains("the frontend command \"exit 4\" failed: exit status: 4"),
        "{shown}"
    );
    let shown = failing("true");
    assert!(shown.contains("printed no Definition"), "{shown}");
    let shown = failing("echo not-protobuf");
    assert!(shown.contains("printed no valid LLB Definition"), "{shown}");
}

/// Builds kiln's own frontend image (`kiln gateway-frontend`) with kiln itself, as
/// scripts/frontend-image.sh makes it, and pushes it to the test registry; gives its name.
fn kiln_frontend_image(dir: &Path) -> String {
    let image = format!(
        "127.0.0.1:5000/kiln-test/kiln-frontend:{:x}",
        std::process::id()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/frontend-image.sh");
    assert_ok(
        Command::new("bash")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .arg(&image)
            .arg("--root")
            .arg(dir.join("publish-root"))
            .arg("--config")
            .arg(crate::common::mirror_config(dir))
            .output()
            .unwrap(),
    );
    image
}

#[test]
fn kilns_own_frontend_image_builds_dockerfiles_and_kiln_yaml_through_the_gateway() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = kiln_frontend_image(dir.path());
    // A Dockerfile: the frontend solves the Dockerfile's and the context's local sources,
    // reads them, resolves busybox through the builder, solves the result and returns it
    // with its image config.
    let out = dir.path().join("out");
    let archive = dir.path().join("image.tar");
    let output = build(
        &dir.path().join("dockerfile"),
        &format!(
            "# syntax={image}\nFROM busybox\nARG WHO=nobody\nCOPY note.txt /note.txt\n\
             RUN echo \"$WHO $(cat /note.txt)\" > /made\nCOPY . /ctx/\nCMD [\"cat\", \"/made\"]\n"
        ),
        &[
            ("note.txt", "was here"),
            (".dockerignore", "secret.txt\n"),
            ("secret.txt", "x"),
        ],
        &[
            "--build-arg",
            "WHO=kiln",
            "-o",
            &format!("type=local,dest={}", out.display()),
            "-o",
            &format!("type=oci,dest={}", archive.display()),
        ],
    );
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains(&format!("[frontend] {image}")), "{shown}");
    assert_eq!(
        fs_err::read_to_string(out.join("made")).unwrap(),
        "kiln was here\n"
    );
    // The context's .dockerignore, read by the frontend, kept the secret out.
    assert!(out.join("ctx/note.txt").exists());
    assert!(!out.join("ctx/secret.txt").exists());
    let config = oci_config(&archive);
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["cat", "/made"]));

    // A kiln.yaml file, through the same image.
    let yaml_dir = dir.path().join("yaml");
    let context = yaml_dir.join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("kiln.yaml"),
        format!(
            "# syntax={image}\napiVersion: kiln/v1\nstages:\n  app:\n    from: busybox\n    \
             steps:\n      - run: echo yaml > /from-yaml\nimage:\n  cmd: [cat, /from-yaml]\n"
        ),
    )
    .unwrap();
    let yaml_out = yaml_dir.join("out");
    let output = kiln_in(
        &yaml_dir,
        &[
            "build",
            "--progress=plain",
            "-f",
            context.join("kiln.yaml").to_str().unwrap(),
            "-o",
            &format!("type=local,dest={}", yaml_out.display()),
            context.to_str().unwrap(),
        ],
        &[],
    );
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains(&format!("[frontend] {image}")), "{shown}");
    assert_eq!(
        fs_err::read_to_string(yaml_out.join("from-yaml")).unwrap(),
        "yaml\n"
    );

    // Its errors keep their place in the file.
    let output = build(
        &dir.path().join("broken"),
        &format!("# syntax={image}\nFROM busybox\nFROBNICATE now\n"),
        &[],
        &[],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(shown.contains("Dockerfile:3"), "{shown}");
    assert!(shown.contains("unknown instruction: FROBNICATE"), "{shown}");
}

/// The kiln.yaml frontend as an executable: `kiln build --print-llb` prints the Definition
/// and writes the image config where `--frontend-exec` asks for it.
#[test]
fn kiln_yaml_as_a_frontend_command() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("kiln.yaml"),
        "apiVersion: kiln/v1\nstages:\n  app:\n    from: busybox\n    steps:\n      \
         - run: echo from-yaml > /y\nimage:\n  cmd: [cat, /y]\n  env: {MODE: exec}\n",
    )
    .unwrap();
    let command = format!(
        "{kiln} --root {root} --config {config} build --print-llb -f kiln.yaml .",
        kiln = env!("CARGO_BIN_EXE_kiln"),
        root = dir.path().join("root").display(),
        config = crate::common::mirror_config(dir.path()).display(),
    );
    let archive = dir.path().join("image.tar");
    let out = dir.path().join("out");
    assert_ok(kiln_in(
        dir.path(),
        &[
            "build",
            "--frontend-exec",
            &command,
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            "-o",
            &format!("type=local,dest={}", out.display()),
            context.to_str().unwrap(),
        ],
        &[],
    ));
    assert_eq!(
        fs_err::read_to_string(out.join("y")).unwrap(),
        "from-yaml\n"
    );
    let config = oci_config(&archive);
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["cat", "/y"]));
    assert!(
        config["config"]["Env"].to_string().contains("MODE=exec"),
        "{config}"
    );
}
