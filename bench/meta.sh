#!/usr/bin/env bash
# Metadata costs of the store (cache/benches/meta.rs):
#   bash bench/meta.sh
# Prints the median of each criterion benchmark:
#   raw/*    the parts: opening + closing the redb database, a durable and a lazy (Durability::None)
#            commit, a syncfs, encoding a record as JSON
#   store/*  the Store calls a solver vertex makes: put_cache_record, cache_record,
#            touch_cache_record, prepare + commit of a snapshot holding one small file
# Target: the store calls of one vertex (about four of them) well under 1 ms in all.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo bench -q -p kiln-cache --bench meta 2>&1 \
  | awk '/^(raw|store)\// { name = $1 } /time:/ { print name, $(NF-3), $(NF-2) }' \
  | sed 's/\[//'
