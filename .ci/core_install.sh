#!/usr/bin/env bash
# The core install, for real: a fresh venv with requirements.txt's core pins alone (no extra)
# and the project built and installed without dependencies; then, outside the source tree,
# `testbed validate`, a one-round smoke run, and a scenario and a command that need an extra
# (exit 2, naming it). The assets must be built already ($TESTBED_CACHE, `make assets`): the core
# install cannot convert the GGUF model. About two minutes, most of it installing torch.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
export HF_HUB_OFFLINE=1
work="$(mktemp -d /tmp/core-install.XXXXXX)"
trap 'rm -rf "$work"' EXIT
t0=$SECONDS
"${PYTHON:-python3}" -m venv "$work/venv"
py="$work/venv/bin/python"
sed -n '/^# --- core/,/^$/p' requirements.txt | grep -v '^#' >"$work/core.txt"
"$py" -m pip install --quiet --disable-pip-version-check -r "$work/core.txt"
mkdir "$work/src"  # a copy to build from: the build leaves nothing in the source tree
tar -C "$repo" --exclude=__pycache__ -cf - pyproject.toml README.md testbed frameworks network device_profiles |
    tar -C "$work/src" -xf -
"$py" -m pip install --quiet --disable-pip-version-check --no-deps "$work/src"
"$py" - <<'PY'
import importlib.util, sys
from testbed.config.extras import EXTRAS  # the extras' modules, as the package itself lists them
modules = [m for mods, _ in EXTRAS.values() for m in mods] + ["matplotlib"]  # matplotlib: dropped, kept out
extra = [m for m in modules if importlib.util.find_spec(m) is not None]
sys.exit(f"core install: has {', '.join(extra)}" if extra else 0)
PY
echo "core install: installed in $((SECONDS - t0)) s"
cd "$work"  # the installed package, not the source tree
tb="$work/venv/bin/testbed"
smoke="$repo/scenarios/smoke.yaml"
"$tb" validate "$smoke"
"$tb" run "$smoke" --out "$work/run" --set framework.rounds=1 --quiet
test "$(wc -l <"$work/run/rounds.csv")" -eq 3  # the header, round 0 and round 1
expect_extra() {  # expect_extra EXTRA COMMAND...: exit 2, the last line naming the extra
    local extra="$1"; shift
    local code=0
    "$@" 2>"$work/err" || code=$?
    if [ "$code" -ne 2 ] || ! tail -n 1 "$work/err" | grep -qF "pip install 'fedge-testbed[$extra]'"; then
        echo "core install: '$*' exited $code, expected 2 naming the $extra extra:" >&2
        tail -n 5 "$work/err" >&2
        exit 1
    fi
}
expect_extra docker "$tb" run "$smoke" --out "$work/docker" --set emulation.backend=docker
expect_extra onnx "$tb" validate "$smoke" --set framework.name=kd
expect_extra report "$tb" report "$work/run"
echo "core install: validate, a smoke run and the extras' errors in $((SECONDS - t0)) s"
