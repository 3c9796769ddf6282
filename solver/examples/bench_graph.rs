//! Writes LLB Definitions for the solver benchmarks (`bench/solver.sh`) to standard output.
//!
//! ```text
//! bench_graph fileops N   N independent mkfile ops merged into one result (N + 1 vertices)
//! bench_graph execs N     a chain of N `true` exec steps on IMAGE
//! bench_graph copy        COPY of the local source `context` into scratch
//! ```

use std::io::Write as _;

use kiln_llb::prost::Message as _;
use kiln_llb::{CopyOptions, FileAction, image, local, merge, scratch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |i: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args.get(i).ok_or("missing count")?.parse()?)
    };
    let state = match args.first().map(String::as_str) {
        Some("fileops") => {
            let n = count(1)?;
            let parts: Vec<_> = (0..n)
                .map(|i| scratch().file(FileAction::mkfile(&format!("/f{i}"), 0o644, b"x")))
                .collect();
            merge(&parts)
        }
        Some("execs") => {
            let n = count(1)?;
            let image_ref = std::env::var("IMAGE")
                .unwrap_or_else(|_| "127.0.0.1:5000/library/busybox:latest".to_owned());
            let mut state = image(&image_ref);
            for i in 0..n {
                state = state.run(["/bin/true", &format!("{i}")]).root();
            }
            state
        }
        Some("copy") => scratch().file(FileAction::copy(
            &local("context"),
            "/",
            "/",
            CopyOptions {
                dir_copy_contents: true,
                create_dest_path: true,
                ..Default::default()
            },
        )),
        _ => return Err("usage: bench_graph fileops N | execs N | copy".into()),
    };
    let bytes = state.marshal().encode_to_vec();
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}
