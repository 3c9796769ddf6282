//! kiln-frontend: turns a Dockerfile into an LLB [`Definition`](kiln_llb) and an OCI image config.
//!
//! It will own the Dockerfile parser (directives, continuation lines, heredocs, flags; written
//! here because no maintained Rust crate parses the full current syntax), shell-word expansion as
//! BuildKit's `shell/lex.go` does it, stage resolution and the conversion of every instruction to
//! LLB ops. It sits between the user's input and the solver: `cli` calls it, and it asks for base
//! image configs through an `ImageMetaResolver` trait it owns, which `cli` backs with the cache
//! crate's registry client.
