#!/usr/bin/env bash
# Creates .venv and installs the project with the locked versions from constraints.txt.
# Idempotent: reinstalls only when setup.cfg, pyproject.toml or constraints.txt changed.
#   scripts/setup.sh          runtime dependencies
#   scripts/setup.sh --dev    plus the test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
python_bin="${PYTHON:-python3}"

if [[ ! -x .venv/bin/python ]]; then
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade "pip>=24" >/dev/null
fi

stamp=".venv/.installed${extras}"
digest=$(cat setup.cfg pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]; then
  exit 0
fi

echo "Installing dependencies into .venv (locked by constraints.txt) ..." >&2
# (grep drops pip's notes about index folders some machines configure but lack)
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt -e ".${extras}" 2> >(grep -v "is ignored: it is neither" >&2)
echo "$digest" > "$stamp"
