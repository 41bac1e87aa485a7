"""run.log: the console's text as a terminal ends up showing it, kept in the run folder."""

from __future__ import annotations

import subprocess
import sys

from testbed.results.runlog import LOG_NAME, PlainText, RunLog


def test_plain_text_keeps_what_a_terminal_shows():
    plain = PlainText()
    # colours dropped; a progress line redrawn with \r and erase-line leaves its last state
    done = plain.feed("\x1b[1;32mround 1\x1b[0m: acc 0.250\n")
    assert done == ["round 1: acc 0.250"]  # a finished line is given at once
    done = plain.feed("rounds 0/2\r\x1b[2Krounds 1/2\r\x1b[2Krounds 2/2")
    done += plain.feed("\n\x1b]8;id=1;file:///x\x1b\\link\x1b]8;;\x1b\\ text\n")
    assert done == ["rounds 2/2", "link text"] and plain.close() == []
    # a two-line live display moved up over and redrawn: from its first redraw on, only its final
    # state is kept (its first frame's top line was given before anything moved up)
    assert plain.feed("bar a 1\nbar b 1") == ["bar a 1"]
    assert plain.feed("\r\x1b[2K\x1b[1A\x1b[2Kround 2 done\nbar a 2\nbar b 2") == []
    plain.feed("\r\x1b[2K\x1b[1A\x1b[2Kbar a 3\nbar b 3")
    assert plain.close() == ["round 2 done", "bar a 3", "bar b 3"]


def test_after_a_cursor_up_the_last_lines_are_held_until_out_of_its_reach():
    plain = PlainText()
    assert plain.feed("live 1\n\x1b[1A\x1b[2K") == []
    done = plain.feed("".join(f"line {i}\n" for i in range(20)))
    assert done == [f"line {i}" for i in range(12)]  # 8 held back
    assert plain.close() == [f"line {i}" for i in range(12, 20)]


def test_the_log_holds_what_came_before_the_folder_and_survives_its_emptying(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with RunLog() as log:
        print("before the folder is known")
        print("a warning", file=sys.stderr)
        path = log.attach(run_dir, append=False)
        assert path == run_dir / LOG_NAME
        for i in range(12):
            print(f"round {i}")
        path.unlink()  # what --overwrite does to the folder after the log started
        for i in range(12, 20):
            print(f"round {i}")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# testbed ") and "run at" in lines[0]
    assert lines[1:] == ["before the folder is known", "a warning"] + [f"round {i}" for i in range(20)]
    shown = capsys.readouterr()
    assert shown.out.count("round ") == 20 and "a warning" in shown.err


def test_a_warning_reaches_the_log(tmp_path):
    """In a plain interpreter (pytest records warnings itself): Python's warnings go to the log."""
    code = ("import sys, warnings; from pathlib import Path; from testbed.results.runlog import RunLog\n"
            "with RunLog() as log:\n"
            "    log.attach(Path(sys.argv[1]), append=False)\n"
            "    warnings.warn('weights not tied', UserWarning)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "UserWarning: weights not tied" in done.stderr
    assert "UserWarning: weights not tied" in (tmp_path / LOG_NAME).read_text()


def test_logging_reaches_the_log_and_nothing_after_the_run(tmp_path, capsys):
    import logging

    with RunLog() as log:
        path = log.attach(tmp_path, append=False)
        handler = logging.StreamHandler()  # made during the run (as transformers' is): it keeps the tee
        logger = logging.getLogger("test_runlog")
        logger.addHandler(handler)
        try:
            logger.warning("a library's notice")
        finally:
            logger.removeHandler(handler)
    logger.addHandler(handler)
    try:
        logger.warning("after the run")
    finally:
        logger.removeHandler(handler)
    log_text = path.read_text()
    assert "a library's notice" in log_text
    assert "after the run" not in log_text and "after the run" in capsys.readouterr().err


def test_quiet_shows_errors_only_and_a_resumed_run_appends(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOG_NAME).write_text("the first part\n")
    with RunLog(quiet=True) as log:
        print("progress")
        print("a warning", file=sys.stderr)
        assert not sys.stderr.isatty()  # rich draws no live bar where nothing is seen
        log.attach(run_dir, append=True)
        log.error("error: it broke")
    shown = capsys.readouterr()
    assert shown.out == "" and shown.err == "error: it broke\n"
    lines = (run_dir / LOG_NAME).read_text().splitlines()
    assert lines[0] == "the first part" and lines[2:] == ["progress", "a warning", "error: it broke"]


def test_json_mode_sends_stdout_to_stderr(capsys):
    with RunLog(stdout_to_stderr=True):
        print("a table")
    shown = capsys.readouterr()
    assert shown.out == "" and shown.err == "a table\n"


def test_bytes_written_to_the_buffer_are_teed_as_text(tmp_path, capsys):
    with RunLog() as log:
        path = log.attach(tmp_path, append=False)
        text = "server container: r\u00e9sum\u00e9 of round 1\n".encode()
        sys.stderr.buffer.write(text[:20])  # a chunk ends inside "é"
        sys.stderr.buffer.write(text[20:])
        sys.stderr.flush()
    assert path.read_text().splitlines()[1] == "server container: r\u00e9sum\u00e9 of round 1"
    assert capsys.readouterr().err == "server container: r\u00e9sum\u00e9 of round 1\n"
