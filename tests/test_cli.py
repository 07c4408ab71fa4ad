"""The CLI: dry runs, one-line errors, hostile inputs."""

import json
import subprocess
import sys

import pytest

from tipo.cli import main


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_plain_text(capsys):
    code, out, _ = run_cli(["expand", "1girl, forest", "--output", "tags", "--dry-run"], capsys)
    assert code == 0 and out == "target: <|long|>\ntag: 1girl, forest\n"


@pytest.mark.parametrize("args,needle", [
    (["expand", "x", "--width", "0", "--height", "5", "--dry-run"], "width=0"),
    (["expand", "x", "--width", "5", "--dry-run"], "both width and height"),
    (["expand", "x", "--length", "huge", "--dry-run"], "invalid choice"),
    (["expand", "x", "--ban-regex", "(", "--dry-run"], "not a valid regular expression"),
    (["expand", "x", "--template", "<|nope|>", "--dry-run"], "unknown"),
    (["expand", "--caption", "", "--task", "short_to_long", "--dry-run"], "short caption"),
    (["expand", "x", "--temperature", "-1", "--dry-run"], "temperature"),
    (["expand", "x", "--out", "f.jsonl"], "--out is only for --batch"),
])
def test_errors_are_one_line(args, needle, capsys):
    code, out, err = run_cli(args, capsys)
    assert code != 0
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_hostile_inputs(capsys):
    huge = ", ".join(f"tag{i}" for i in range(10_000))
    for text in [huge, "(((((", "]]]]", "\x00\x01\x1b[31m", "漢字, émoji 🙂, עברית, ((", "\\" * 100, "BREAK BREAK"]:
        code, out, err = run_cli(["expand", text, "--dry-run", "--json"], capsys)
        assert code == 0, err
        json.loads(out)


def test_parse_rejects_invalid_utf8():
    run = subprocess.run([sys.executable, "-m", "tipo", "parse"], input=b"tag: \xff\xfe", capture_output=True)
    assert run.returncode != 0 and b"UTF-8" in run.stderr and b"Traceback" not in run.stderr


def test_no_command_prints_help(capsys):
    code, out, _ = run_cli([], capsys)
    assert code == 2 and "expand" in out
