//! Fuzzes the Dockerfile parser, the instruction parser, `RUN --mount`/`--device` parsing and
//! shell-word expansion: no input may panic.
//!
//! Run with `cargo +nightly fuzz run parse_expand` from `frontend/`.

#![no_main]

use kiln_frontend::{EnvList, Lexer, parse, parse_device, parse_mount, parse_stages};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let env = EnvList::from_entries(["A=1", "EMPTY=", "PATH=/usr/bin:/bin", "SPACES=a  b "]);
    for escape in ['\\', '`'] {
        let lexer = Lexer::new(escape);
        let _ = lexer.process(&text, &env);
        let _ = lexer
            .raw_quotes(true)
            .raw_escapes(true)
            .skip_unset_env(true)
            .process_words(&text, &env);
    }
    let _ = parse_device(&text);
    let _ = parse_mount(&text, None);
    let mut identity = |s: &str| Ok(s.to_string());
    let _ = parse_mount(&text, Some(&mut identity));

    let Ok(dockerfile) = parse(data) else { return };
    let _ = dockerfile.dump();
    let _ = parse_stages(&dockerfile);
    let lexer = Lexer::new(dockerfile.escape);
    for node in &dockerfile.nodes {
        for arg in node.args.iter().chain(&node.flags) {
            let _ = lexer.process(arg, &env);
        }
        for heredoc in &node.heredocs {
            let _ = lexer.process_word(&heredoc.content, &env);
        }
    }
});
