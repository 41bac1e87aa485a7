#!/usr/bin/env bash
# The install's dependency ranges, resolved by pip in a fresh venv, installing nothing
# (pip install --dry-run --ignore-installed --report):
#   core   `.` alone: none of the extras' packages in what it pulls in
#   flower `.[all]` beside Flower's `flwr[simulation]==1.42.0`: the two install together
#   pinned `-r requirements.txt` with `.[all,test]`: the pins of `make setup` satisfy the ranges
# Needs PyPI (CI has it). About two minutes, most of it pip fetching metadata.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWER="${FLOWER:-flwr[simulation]==1.42.0}"
work="$(mktemp -d /tmp/coinstall.XXXXXX)"
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade "pip>=25"   # --dry-run --report: pip 22.2 on
resolve() {  # resolve NAME REQUIREMENT...: NAME.json, pip's installation report
    local name="$1"; shift
    local t0=$SECONDS
    if ! timeout 900 "${pip[@]}" install --quiet --dry-run --ignore-installed --report "$work/$name.json" "$@" \
         >"$work/$name.log" 2>&1; then
        echo "coinstall: $name: pip cannot resolve $*" >&2
        tail -n 25 "$work/$name.log" >&2
        exit 1
    fi
    echo "coinstall: $name resolved in $((SECONDS - t0)) s"
}
resolve core .
resolve flower ".[all]" "$FLOWER"
resolve pinned -r requirements.txt ".[all,test]"
"$work/venv/bin/python" - "$work" <<'PY'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
def resolved(name):
    report = json.loads((work / f"{name}.json").read_text())
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"].split("+")[0]
            for item in report["install"]}  # 2.13.0+cpu is 2.13.0

optional = {"docker", "onnx", "onnxruntime", "onnxscript", "gguf", "plotly", "matplotlib", "ray", "mlflow",
            "mlflow-skinny", "sqlalchemy", "alembic", "flwr"}
core = resolved("core")
pulled = sorted(optional & set(core))
if pulled:
    sys.exit(f"coinstall: the core install pulls in optional packages: {', '.join(pulled)}")
flower = resolved("flower")
for name in ("fedge-testbed", "flwr", "ray", "rich", "protobuf", "torch", "mlflow-skinny"):
    if name not in flower:
        sys.exit(f"coinstall: {name} is missing from the resolve of .[all] with Flower")
pins = {}
for line in Path("requirements.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if "==" in line:
        name, version = line.split("==")
        pins[name.split("[")[0].strip().lower().replace("_", "-")] = version.strip()
pinned = resolved("pinned")
off = [f"{n}=={v} (resolved {pinned.get(n)})" for n, v in pins.items() if pinned.get(n) != v]
if off:
    sys.exit(f"coinstall: requirements.txt pins not kept: {', '.join(off)}")
print(f"coinstall: core {len(core)} packages, none optional; with Flower: "
      + ", ".join(f"{n} {flower[n]}" for n in ("flwr", "ray", "rich", "protobuf", "torch", "mlflow-skinny"))
      + f"; requirements.txt's {len(pins)} pins kept")
PY
