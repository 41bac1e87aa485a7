"""Loading profiles from YAML, and the catalog shipped with the package."""

from __future__ import annotations

import functools
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError
from rich.table import Table

from device_profiles.schema import DeviceProfile, LinkProfile, ProfileError

PACKAGE_DIR = Path(__file__).parent  # package data lies next to the code after install
DEVICES_DIR = PACKAGE_DIR / "devices"
LINKS_DIR = PACKAGE_DIR / "links"

P = TypeVar("P", DeviceProfile, LinkProfile)


def load_device(path: Path) -> DeviceProfile:
    """Read one device profile; any problem raises ProfileError naming the file and field."""
    return _load(DeviceProfile, Path(path))


def load_link(path: Path) -> LinkProfile:
    """Read one link profile; trace paths are resolved against the file's folder."""
    path = Path(path)
    link = _load(LinkProfile, path)
    traces = {
        field: _resolve_trace(path, field, getattr(link, field))
        for field in ("trace_down", "trace_up")
        if getattr(link, field) is not None
    }
    return link.model_copy(update=traces) if traces else link


def devices() -> dict[str, DeviceProfile]:
    """The shipped device profiles by name, sorted by name."""
    return dict(_catalog(DEVICES_DIR, load_device))


def links() -> dict[str, LinkProfile]:
    """The shipped link profiles by name, sorted by name."""
    return dict(_catalog(LINKS_DIR, load_link))


def get_device(name: str) -> DeviceProfile:
    """One shipped device profile; an unknown name lists the known ones."""
    return _lookup("device", name, devices())


def get_link(name: str) -> LinkProfile:
    """One shipped link profile; an unknown name lists the known ones."""
    return _lookup("link", name, links())


def catalog_tables() -> tuple[Table, Table]:
    """Two rich tables (devices, links) summarising the shipped catalog."""
    return _device_table(devices().values()), _link_table(links().values())


MAX_PROFILE_BYTES = 2**20  # a profile is a page of YAML


def _load(model: type[P], path: Path) -> P:
    data = _read_mapping(path)
    try:
        return model.model_validate(data, context={"stem": path.stem})
    except ValidationError as exc:
        raise ProfileError(_describe(path, model, exc), path) from exc
    except RecursionError:
        raise ProfileError(f"{path}: (top level): nested too deeply to be a profile", path) from None


def _read_text(path: Path) -> str:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ProfileError(f"{path}: (file): not a regular file", path)
        if info.st_size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{path}: (file): {info.st_size:,} bytes, more than the {MAX_PROFILE_BYTES:,} "
                               "a profile may have", path)
        data = path.read_bytes()
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{path}: (file): cannot read: {getattr(exc, 'strerror', None) or exc}", path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ProfileError(f"{path}: line {line}: not UTF-8 text (byte {exc.start}: {exc.reason})", path) from None


def _read_mapping(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise ProfileError(f"{path}: {where}: invalid YAML: {problem}", path) from None
    except RecursionError:
        raise ProfileError(f"{path}: (file): invalid YAML: nested too deeply", path) from None
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # YAML's constructors: `!!int abc`
        raise ProfileError(f"{path}: (file): invalid YAML: {type(exc).__name__}: {exc}", path) from None
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else type(data).__name__
        raise ProfileError(f"{path}: (top level): expected a mapping of fields, got {kind}", path)
    return data


def _one_line(text: str) -> str:
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _describe(path: Path, model: type[P], exc: ValidationError) -> str:
    """One ``file: field: problem`` line per validation error (each a single line)."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(_one_line(f"{path}: {field}: {_problem(model, error)}"))
    return "\n".join(lines)


def _problem(model: type[P], error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown field; known fields: {', '.join(model.model_fields)}"
    if kind == "missing":
        return "required field is missing (write null where a value is unknown)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error":
        return message
    shown = repr(error["input"])
    return f"{message} (got {shown if len(shown) <= 80 else shown[:77] + '...'})"


def _resolve_trace(path: Path, field: str, trace: str) -> str:
    try:
        resolved = (path.parent / trace).resolve()
        found = resolved.is_file()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ProfileError(f"{path}: {field}: cannot resolve trace path {trace!r}: {exc}", path) from None
    if not found:
        raise ProfileError(f"{path}: {field}: no such trace file {str(resolved)!r}", path)
    return str(resolved)


@functools.cache
def _catalog(folder: Path, load: Callable[[Path], P]) -> tuple[tuple[str, P], ...]:
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise ProfileError(f"{folder}: (folder): no *.yaml profiles found (package data missing?)")
    profiles = (load(file) for file in files)
    return tuple(sorted(((p.name, p) for p in profiles), key=lambda item: item[0]))


def _lookup(kind: str, name: str, catalog: dict[str, P]) -> P:
    if name not in catalog:
        raise ProfileError(f"unknown {kind} {name!r}; known: {', '.join(catalog)}")
    return catalog[name]


def _fmt(value: float | None, spec: str = "g") -> str:
    return "-" if value is None else format(value, spec)


def _device_table(profiles: Iterable[DeviceProfile]) -> Table:
    table = Table(title="Devices")
    for header in ("name", "cores", "CPU GFLOP/s", "accel GFLOP/s", "RAM GB",
                   "app budget MB", "mem BW GB/s", "power W"):
        table.add_column(header, justify="left" if header == "name" else "right",
                         no_wrap=header == "name")
    for d in profiles:
        table.add_row(d.name, str(d.cpu_cores), _fmt(d.cpu_gflops, ".1f"),
                      _fmt(d.accelerator_gflops, ".1f"), _fmt(d.ram_gb),
                      str(d.app_ram_budget_mb), _fmt(d.mem_bandwidth_gbps, ".1f"),
                      _fmt(d.power_w))
    return table


def _link_table(profiles: Iterable[LinkProfile]) -> Table:
    table = Table(title="Links")
    for header in ("name", "down Mbit/s", "up Mbit/s", "RTT ms", "loss",
                   "radio up mW/Mbit/s", "radio down mW/Mbit/s", "radio base mW"):
        table.add_column(header, justify="left" if header == "name" else "right",
                         no_wrap=header == "name")
    for link in profiles:
        table.add_row(link.name, _fmt(link.down_mbps), _fmt(link.up_mbps),
                      _fmt(link.rtt_ms), _fmt(link.loss_rate), _fmt(link.radio_up_mw_per_mbps),
                      _fmt(link.radio_down_mw_per_mbps), _fmt(link.radio_base_mw))
    return table
