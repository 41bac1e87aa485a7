"""Reading data files by task kind (testbed.ml.formats, through testbed.ml.data.load_table):
every file format, the instruction layouts (Alpaca, prompt/response, chat messages), language
modelling texts, group columns, and the one-line DataError of each bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.config.dataset import ColumnsConfig
from testbed.ml.data import ChatTurn, DataError, Example, TextDataset, load_table
from testbed.ml.formats import TABLE_SUFFIXES
from tests.fuzzing import share, values

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "topic": "maths"},
    {"instruction": "Greet the reader.", "input": "", "output": "Hello!", "topic": "chat"},
    {"instruction": "Name a colour.", "output": "Blue", "topic": "art"},  # no input at all
]
ALPACA_EXAMPLES = (Example("Add the numbers.\n\n2 and 3", "5"), Example("Greet the reader.", "Hello!"),
                   Example("Name a colour.", "Blue"))
CHAT = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                  {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6"}]},
]
CHAT_EXAMPLES = (
    Example("Capital of France?", "Paris.", turns=(ChatTurn("system", "Be brief."),
                                                   ChatTurn("user", "Capital of France?"))),
    Example("And 3+3?", "6", turns=(ChatTurn("user", "2+2?"), ChatTurn("assistant", "4"), ChatTurn("user", "And 3+3?"))),
)


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """`rows` in the format of `path`'s suffix (pandas for CSV, TSV and Parquet; a chat list
    in a CSV cell as JSON text)."""
    suffix = path.suffix
    if suffix in (".jsonl", ".ndjson"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        cells = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
        pd.DataFrame(cells).to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    return path


FORMATS = [".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet"]


def test_every_suffix_is_a_table_suffix() -> None:
    assert TABLE_SUFFIXES == (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")


# --- instruction --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_alpaca_with_and_without_input(tmp_path: Path, suffix: str) -> None:
    ds = load_table(write(tmp_path / f"alpaca{suffix}", ALPACA), kind="instruction")

    assert ds == TextDataset(f"alpaca{suffix}", ALPACA_EXAMPLES, (), kind="instruction")
    assert ds.groups is None


@pytest.mark.parametrize("suffix", FORMATS)
def test_prompt_and_response(tmp_path: Path, suffix: str) -> None:
    rows = [{"prompt": "Q1", "response": "A1", "other": "x"}, {"prompt": "Q2\nmore", "response": "A2", "other": "y"}]

    ds = load_table(write(tmp_path / f"pr{suffix}", rows), kind="instruction")

    assert ds.examples == (Example("Q1", "A1"), Example("Q2\nmore", "A2"))
    assert (ds.labels, ds.kind) == ((), "instruction")


@pytest.mark.parametrize("suffix", FORMATS)
def test_chat_messages_with_system_user_and_assistant(tmp_path: Path, suffix: str) -> None:
    ds = load_table(write(tmp_path / f"chat{suffix}", CHAT), kind="instruction")

    assert ds.examples == CHAT_EXAMPLES
    assert ds.examples[0].response == "Paris."


@pytest.mark.parametrize("suffix", FORMATS)
def test_custom_column_names_and_a_group(tmp_path: Path, suffix: str) -> None:
    rows = [{"q": "Why?", "ctx": "sky", "a": "Rayleigh", "src": "physics"},
            {"q": "Who?", "ctx": "", "a": "Me", "src": "7" if suffix == ".parquet" else 7}]  # a number: a string
    columns = ColumnsConfig(prompt="q", input="ctx", response="a", group="src")

    ds = load_table(write(tmp_path / f"custom{suffix}", rows), kind="instruction", columns=columns)

    assert ds.examples == (Example("Why?\n\nsky", "Rayleigh", group="physics"), Example("Who?", "Me", group="7"))
    assert ds.groups == ("physics", "7")


def test_custom_messages_column(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", [{"dialog": row["messages"]} for row in CHAT])

    assert load_table(path, kind="instruction", columns=ColumnsConfig(messages="dialog")).examples == CHAT_EXAMPLES


def test_messages_come_before_alpaca_and_alpaca_before_prompt(tmp_path: Path) -> None:
    both = write(tmp_path / "both.jsonl", [{**CHAT[0], "instruction": "I", "output": "O", "prompt": "P",
                                            "response": "R"}])
    alpaca = write(tmp_path / "alpaca.jsonl", [{"instruction": "I", "output": "O", "prompt": "P", "response": "R"}])

    assert load_table(both, kind="instruction").examples == CHAT_EXAMPLES[:1]
    assert load_table(alpaca, kind="instruction").examples == (Example("I", "O"),)


# --- language modelling and groups --------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_language_modelling_texts_with_a_group(tmp_path: Path, suffix: str) -> None:
    rows = [{"body": "First text.", "src": "a"}, {"body": "Second\ntext.", "src": "b"}]

    ds = load_table(write(tmp_path / f"lm{suffix}", rows), kind="language_modeling",
                    columns=ColumnsConfig(text="body", group="src"))
    plain = load_table(write(tmp_path / f"plain{suffix}", [{"text": "t1"}, {"text": "t2"}]), kind="language_modeling")

    assert ds == TextDataset(f"lm{suffix}", (Example("First text.", group="a"), Example("Second\ntext.", group="b")),
                             (), kind="language_modeling")
    assert plain.examples == (Example("t1"), Example("t2"))
    assert plain.groups is None


@pytest.mark.parametrize("suffix", FORMATS)
def test_classification_with_a_group_column_and_columns_overriding_text_and_label(tmp_path: Path,
                                                                                   suffix: str) -> None:
    rows = [{"body": "good", "y": 1, "site": "s1"}, {"body": "bad", "y": 0, "site": "s2"}]
    columns = ColumnsConfig(text="body", label="y", group="site")

    ds = load_table(write(tmp_path / f"cls{suffix}", rows), text="ignored", label="ignored", columns=columns)

    assert ds.examples == (Example("good", "1", group="s1"), Example("bad", "0", group="s2"))
    assert (ds.labels, ds.groups, ds.kind) == (("0", "1"), ("s1", "s2"), "classification")


def test_classification_parquet_reads_like_csv(tmp_path: Path) -> None:
    rows = [{"text": "a, b", "label": "pos"}, {"text": "c", "label": "neg"}]

    assert load_table(write(tmp_path / "t.parquet", rows)) == TextDataset(
        "t.parquet", (Example("a, b", "pos"), Example("c", "neg")), ("neg", "pos"))


# --- bad input: one line naming the file, the row and what was expected --------------------------


def _error(path: Path, kind: str = "instruction", **columns: str) -> str:
    with pytest.raises(DataError) as caught:
        load_table(path, kind=kind, columns=ColumnsConfig(**columns))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_no_recognised_columns_lists_those_found_and_those_read(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}])
    parquet = write(tmp_path / "x.parquet", [{"question": "q", "answer": "a"}])
    csv = write(tmp_path / "x.csv", [{"question": "q", "answer": "a"}])

    reads = ("no columns task.kind instruction reads: it reads a chat list 'messages', Alpaca's 'instruction' "
             "(+ 'input') and 'output', or 'prompt' and 'response' (dataset.columns names others); "
             "columns found: ['question', 'answer']")
    assert _error(jsonl) == f"{jsonl}: line 1: {reads}"
    assert _error(parquet) == f"{parquet}: (columns): {reads}"
    assert _error(csv) == f"{csv}: (header): {reads}"
    assert _error(csv, "language_modeling") == (
        f"{csv}: (header): missing text column 'text' (task.kind language_modeling reads one text column; "
        "dataset.columns.text names another); columns found: ['question', 'answer']")


def test_half_a_layout_or_a_missing_named_column(tmp_path: Path) -> None:
    path = write(tmp_path / "h.jsonl", [{"instruction": "i", "topic": "t"}])

    assert _error(path) == (f"{path}: line 1: missing response column 'output' or 'response' (dataset.columns.response "
                            "names another); columns found: ['instruction', 'topic']")
    assert _error(path, prompt="q", response="topic") == (
        f"{path}: line 1: missing prompt column 'q' (dataset.columns.prompt); columns found: ['instruction', 'topic']")
    assert _error(path, messages="chat") == (
        f"{path}: line 1: missing messages column 'chat' (dataset.columns.messages); "
        "columns found: ['instruction', 'topic']")
    assert _error(path, "language_modeling", text="instruction", group="site") == (
        f"{path}: line 1: missing group column 'site' (dataset.columns.group); columns found: ['instruction', 'topic']")


@pytest.mark.parametrize(("rows", "kind", "problem"), [
    ([{"prompt": "p", "response": "r"}, {"prompt": "p", "response": "  "}], "instruction",
     "line 2: empty response in column 'response'"),
    ([{"prompt": "p", "response": "r"}, {"prompt": None, "response": "r"}], "instruction",
     "line 2: empty prompt in column 'prompt'"),
    ([{"instruction": 5, "output": "r"}], "instruction", "line 1: prompt in column 'instruction' must be a string, got int"),
    ([{"instruction": "i", "input": ["x"], "output": "r"}], "instruction",
     "line 1: input in column 'input' must be a string, got list"),
    ([{"text": "a"}, {"text": ""}], "language_modeling", "line 2: empty text in column 'text'"),
    ([{"text": "a", "g": None}], "language_modeling", "line 1: empty group in column 'g'"),
])
def test_empty_or_mistyped_values_name_the_line(tmp_path: Path, rows: list[dict[str, Any]], kind: str,
                                                problem: str) -> None:
    path = write(tmp_path / "v.jsonl", rows)
    columns = {"group": "g"} if "'g'" in problem else {}

    assert _error(path, kind, **columns) == f"{path}: {problem}"


def test_empty_values_in_csv_and_parquet_name_the_row(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "response": "r"}, {"prompt": "p", "response": ""}]
    csv, parquet = write(tmp_path / "e.csv", rows), write(tmp_path / "e.parquet", rows)

    assert _error(csv) == f"{csv}: row 2: empty response in column 'response'"
    assert _error(parquet) == f"{parquet}: row 2: empty response in column 'response'"


@pytest.mark.parametrize(("messages", "problem"), [
    ([{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}],
     "message 2: unknown role 'bot'; roles: system, user, assistant"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}],
     "message 3: the last message must be the assistant's response, got role 'user'"),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
     "no user message; expected the user's prompt before the assistant's response"),
    ([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
     "message 2: the message before the assistant's response must be the user's, got role 'system'"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}],
     "message 2: empty response (the assistant's content)"),
    ([{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}],
     "message 1: empty prompt (the user's content)"),
    ([{"role": "user", "text": "q"}], "message 1: expected a {role, content} object, got {'role': 'user', 'text': 'q'}"),
    ([{"role": "user", "content": ["q"]}, {"role": "assistant", "content": "a"}],
     "message 1: content must be a string, got list"),
    (["user: q"], "message 1: expected a {role, content} object, got 'user: q'"),
    ({"role": "user"}, "expected a JSON list of {role, content} objects, got dict"),
    ([], "expected a JSON list of {role, content} objects, got an empty list"),
    (None, "empty messages, expected a JSON list of {role, content} objects"),
    ("[{\"role\": \"user\"}]", "expected a JSON list of {role, content} objects, got str"),
])
def test_bad_chat_lists_name_the_line_column_and_message(tmp_path: Path, messages: Any, problem: str) -> None:
    good = CHAT[0]
    path = write(tmp_path / "chat.jsonl", [good, {"messages": messages}])

    assert _error(path) == f"{path}: line 2: column 'messages': {problem}"


def test_chat_lists_in_csv_are_json_text_never_evaluated(tmp_path: Path) -> None:
    path = tmp_path / "chat.csv"
    path.write_text('messages\n"[{""role"": ""user"", ""content"": ""q""}, {""role"": ""assistant"", '
                    '""content"": ""a""}]"\n"__import__(\'os\').system(\'false\')"\n')

    assert _error(path) == (f"{path}: row 2: column 'messages': invalid JSON (column 1: Expecting value); "
                            "expected a JSON list of {role, content} objects")
    path.write_text('messages\n"[{\'role\': \'user\', \'content\': \'q\'}]"\n')
    assert _error(path) == (f"{path}: row 1: column 'messages': invalid JSON (column 3: Expecting property name "
                            "enclosed in double quotes); expected a JSON list of {role, content} objects")


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.json", "bad.csv", "bad.tsv"])
def test_text_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path, name: str) -> None:
    sep = "\t" if name.endswith(".tsv") else ","
    content = (b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "b"}\n' if "json" in name
               else f"prompt{sep}response\na{sep}b\n".encode() + b"caf\xe9" + sep.encode() + b"b\n")
    path = tmp_path / name
    path.write_bytes(content)
    byte = content.index(b"\xe9")
    line = 2 if "json" in name else 3

    assert _error(path) == (f"{path}: line {line}: not UTF-8 (byte {byte}: invalid continuation byte); "
                            "the file must be UTF-8 text")
    assert _error(path, "language_modeling", text="prompt").startswith(f"{path}: line {line}: not UTF-8 (byte {byte}: ")


def test_json_classification_must_be_utf8_and_csv_classification_reads_as_before(tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes(b'{"text": "a", "label": "x"}\n{"text": "\xff", "label": "y"}\n')
    csv = tmp_path / "c.csv"
    csv.write_bytes(b"text,label\na,x\n\xff,y\n")

    assert _error(jsonl, "classification") == (
        f"{jsonl}: line 2: not UTF-8 (byte 38: invalid start byte); the file must be UTF-8 text")
    assert _error(csv, "classification").startswith(f"{csv}: (file): cannot parse as CSV: 'utf-8' codec can't decode")


def test_a_corrupt_or_empty_parquet_file_is_named(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.parquet"
    corrupt.write_bytes(b"PAR1 this is no parquet footer PAR1")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    renamed = tmp_path / "csv.parquet"
    renamed.write_text("prompt,response\na,b\n")

    assert re.fullmatch(rf"{re.escape(str(corrupt))}: \(file\): cannot read as Parquet: .+", _error(corrupt))
    assert _error(empty) == f"{empty}: (file): empty file, expected a Parquet file"
    assert _error(renamed).startswith(f"{renamed}: (file): cannot read as Parquet: ")


def test_an_unknown_kind_and_a_file_without_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", [{"prompt": "p", "response": "r"}])
    header_only = tmp_path / "h.csv"
    header_only.write_text("prompt,response\n")

    assert _error(path, "ranking") == (
        f"{path}: (kind): unknown task kind 'ranking'; expected one of classification, instruction, language_modeling")
    assert _error(header_only) == f"{header_only}: (file): no rows"


# --- fuzz: an instruction file loads or is a DataError, nothing else ----------------------------


chat_turn = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "bot", ""]) | values,
                                   "content": st.sampled_from(["q", "a", "", " "]) | values})
record = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(chat_turn, max_size=4) | values}),
    st.fixed_dictionaries({"instruction": values | st.just("do"), "output": values | st.just("done")},
                          optional={"input": values}),
    st.fixed_dictionaries({"prompt": values | st.just("p"), "response": values | st.just("r")}),
    st.dictionaries(st.sampled_from(["messages", "prompt", "response", "instruction", "output", "input", "x"]), values,
                    max_size=4),
    values,
)


@st.composite
def instruction_jsonl(draw: st.DrawFn) -> bytes:
    """JSON lines of nearly right instruction records, or raw bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=200) | st.sampled_from([b"\xff\n", b"{" * 3000, b"[]", b"\n\n"]))
    rows = draw(st.lists(record, max_size=6))
    return "\n".join(json.dumps(r, allow_nan=True, default=str) for r in rows).encode("utf-8", "surrogatepass")


def test_fuzzed_instruction_files_load_or_raise_a_one_line_data_error(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.jsonl"

    @share(1)
    @given(instruction_jsonl())
    def check(content: bytes) -> None:
        path.write_bytes(content)
        try:
            ds = load_table(path, kind="instruction")
        except DataError as error:
            assert str(error).startswith(f"{path}: ") and "\n" not in str(error), str(error)
            return
        assert len(ds) >= 1 and all(e.text.strip() and e.label.strip() for e in ds.examples)

    check()


def test_fuzzed_parquet_bytes_load_or_raise_a_one_line_data_error(tmp_path: Path) -> None:
    """Real Parquet files cut short or with bytes overwritten, and random bytes."""
    source = write(tmp_path / "real.parquet", ALPACA + [{"messages": CHAT[0]["messages"]}])
    real = source.read_bytes()
    path = tmp_path / "fuzz.parquet"

    @share(1 / 3)
    @given(st.one_of(
        st.binary(max_size=300),
        st.integers(0, len(real)).map(lambda n: real[:n]),
        st.tuples(st.integers(0, len(real) - 1), st.binary(min_size=1, max_size=8)).map(
            lambda edit: real[:edit[0]] + edit[1] + real[edit[0] + len(edit[1]):]),
    ))
    def check(content: bytes) -> None:
        path.write_bytes(content)
        for kind in ("instruction", "language_modeling", "classification"):
            try:
                load_table(path, kind=kind)
            except DataError as error:
                assert str(error).startswith(f"{path}: ") and "\n" not in str(error), str(error)

    check()
