#!/usr/bin/env bash
# Creates .venv and installs the project with the locked versions from constraints.txt.
# Idempotent: reinstalls only when setup.cfg, pyproject.toml or constraints.txt changed.
#   scripts/setup.sh          runtime dependencies
#   scripts/setup.sh --dev    plus the test and lint tools
# It says what it does on stderr: one status line that updates in place on a terminal,
# a line per phase (and every 50 packages) in a log.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
python_bin="${PYTHON:-python3}"

# (grep drops pip's notes about index folders some machines configure but lack)
quiet_pip() { grep -v "is ignored: it is neither" >&2 || true; }

# One line of progress: rewritten in place on a terminal, else printed when it says
# something new (a phase, or another 50 packages).
say() {
  if [[ -t 2 ]]; then
    printf '\r\033[K  %s' "$1" >&2
  elif [[ "${2:-}" == "new" ]]; then
    printf '  %s\n' "$1" >&2
  fi
}

# Reads pip's output and says how far it is: packages resolved, then the install.
progress() {
  local line resolved=0 name names commas
  while IFS= read -r line; do
    case "$line" in
      "Collecting "* | "Processing "* | "Requirement already satisfied: "*)
        resolved=$((resolved + 1))
        name=${line#* }
        name=${name#already satisfied: }
        name=${name%% *}
        name=${name##*/}        # a local wheel's file: its project's name
        name=${name%%-[0-9]*}
        say "resolving packages: ${resolved} (${name})" \
          "$( ((resolved % 50)) || echo new)"
        ;;
      "Building wheels for collected packages: "*)
        say "building the project's editable wheel ..." new
        ;;
      "Installing collected packages: "*)
        names=${line#*: }
        commas=${names//[^,]/}
        say "installing $((${#commas} + 1)) packages (the longest part) ..." new
        ;;
      "Successfully installed "*)
        say "installed $(($(wc -w <<<"$line") - 2)) packages" new
        ;;
    esac
  done
  [[ -t 2 ]] && printf '\n' >&2
  return 0
}

if [[ ! -x .venv/bin/python ]]; then
  echo "Creating .venv with $("$python_bin" --version) ..." >&2
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade "pip>=24" 2> >(quiet_pip) >/dev/null
fi

stamp=".venv/.installed${extras}"
digest=$(cat setup.cfg pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]; then
  exit 0
fi

echo "Installing dependencies into .venv (locked by constraints.txt) ..." >&2
# The project is installed editable; setuptools then warns that a folder named like one
# of its packages in the working directory could shadow it: true of any editable
# install, and nothing to act on here, so that one warning is filtered.
PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off \
  -c constraints.txt -e ".${extras}" 2> >(quiet_pip) | progress
echo "$digest" > "$stamp"
echo "Done in ${SECONDS}s: .venv is ready." >&2
