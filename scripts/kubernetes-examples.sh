#!/usr/bin/env bash
# Checks examples/kubernetes offline: the manifests against Kubernetes' own schemas
# (kubernetes-validate, from PyPI, which carries them; installed into a virtualenv on first use)
# and consistenthash.py's doctests. The daemon arguments the manifests give are checked by
# kiln's own tests, the certificates script by the daemon's TLS test.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${KILN_TEST_VENV:-/var/lib/kiln-test-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
"$venv/bin/kubernetes-validate" --strict --quiet examples/kubernetes/*.yaml
python3 -m doctest examples/kubernetes/consistenthash.py
echo "examples/kubernetes: manifests valid, consistenthash.py doctests pass"
