#!/usr/bin/env python3
"""Picks the kiln daemon of a StatefulSet that builds KEY (a project, a repository), so that the
same key always reaches the same daemon and finds its cache warm in that daemon's store.

Rendezvous (highest random weight) hashing: every daemon gets a score for the key, the highest
wins. When the StatefulSet grows, only the keys the new daemon wins move (to it); when it
shrinks, only the keys of the daemon that went move.

usage: consistenthash.py KEY REPLICAS [NAME]
prints NAME-N, the pod (default NAME: kilnd); its address is tcp://NAME-N.NAME:1234.

>>> pick("github.com/acme/app", 3) == pick("github.com/acme/app", 3)
True
>>> keys = [f"project-{i}" for i in range(3000)]
>>> moved = [k for k in keys if pick(k, 3) != pick(k, 4)]
>>> all(pick(k, 4) == 3 for k in moved)        # growing: keys move only to the new daemon
True
>>> 600 < len(moved) < 900                     # about a quarter of them
True
>>> sorted(set(pick(k, 3) for k in keys))
[0, 1, 2]
>>> min(sum(1 for k in keys if pick(k, 3) == n) for n in range(3)) > 900   # balanced
True
"""

import hashlib
import sys


def score(key: str, replica: int) -> int:
    digest = hashlib.sha256(f"{replica}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def pick(key: str, replicas: int) -> int:
    """The ordinal of the daemon (0 .. replicas-1) that builds `key`."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    return max(range(replicas), key=lambda replica: score(key, replica))


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or not argv[2].isdigit():
        print(__doc__.split("\n\n")[2], file=sys.stderr)
        return 2
    name = argv[3] if len(argv) == 4 else "kilnd"
    print(f"{name}-{pick(argv[1], int(argv[2]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
