//! kiln-llb: the build graph, wire-compatible with BuildKit's LLB.
