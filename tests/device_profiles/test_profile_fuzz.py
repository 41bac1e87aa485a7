"""Fuzzing device and link profiles (the shipped ones with fields replaced, removed or added,
and files that are no profile; strategies in tests/fuzzing.py): the loader returns a profile or
raises ProfileError whose every line reads ``file: field: problem``, and `testbed validate`
with the fuzzed file in the catalog accepts or refuses in one ``error:`` line."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given

from device_profiles import ProfileError, load_device, load_link
from tests.fuzzing import assert_clean, profile_case, profile_text, share

PROFILE_LINE = re.compile(r"^\S+\.yaml: [^\n]+?: [^\n]+$")


def test_fuzzed_profiles_load_or_fail_naming_file_and_field(tmp_path: Path) -> None:
    @share(2 / 3)
    @given(profile_text())
    def check(example: tuple[str, str, bytes]) -> None:
        kind, stem, content = example
        path = tmp_path / f"{stem}.yaml"
        path.write_bytes(content)
        try:
            (load_device if kind == "devices" else load_link)(path)
        except ProfileError as exc:
            lines = str(exc).split("\n")
            assert lines and all(PROFILE_LINE.match(line) and line.startswith(str(path)) for line in lines), str(exc)
            assert exc.path == str(path)

    check()


def test_a_fuzzed_catalog_profile_is_refused_by_validate_in_one_line(tmp_path: Path, assets) -> None:
    @share(1 / 5)
    @given(profile_text())
    def check(example: tuple[str, str, bytes]) -> None:
        assert_clean(profile_case(example, tmp_path), example)

    check()
