"""Every golden case of the TIPO wire format must match byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from golden_cases import cli_args, load, request_kwargs

from tipo.cli import main
from tipo.parse import parse_text
from tipo.planner import plan
from tipo.request import Request

PROMPTS = load("prompts.jsonl")
PARSES = load("parse.jsonl")


def test_golden_files_found():
    assert len(PROMPTS) >= 20 and len(PARSES) >= 10


@pytest.mark.parametrize("case", PROMPTS, ids=[c["id"] for c in PROMPTS])
def test_prompt_golden_api(case):
    p = plan(Request(**request_kwargs(case["request"])))
    assert p.prompt == case["prompt"]
    assert p.task_name == case["task"]


@pytest.mark.parametrize("case", PROMPTS, ids=[c["id"] for c in PROMPTS])
def test_prompt_golden_cli(case, capsys):
    assert main(cli_args(case["request"])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"] == case["prompt"]
    assert out["task"] == case["task"]


@pytest.mark.parametrize("case", PARSES, ids=[c["id"] for c in PARSES])
def test_parse_golden_api(case):
    assert json.dumps(parse_text(case["text"]).to_json()) == json.dumps(case["parsed"])


def test_parse_golden_cli_subprocess():
    """The installed entry point, end to end, on every parse case."""
    for case in PARSES:
        run = subprocess.run([sys.executable, "-m", "tipo", "parse"], input=case["text"].encode(),
                             capture_output=True, check=True)
        assert run.stdout.decode().strip() == json.dumps(case["parsed"]), case["id"]


def test_expand_dry_run_subprocess():
    case = PROMPTS[0]
    run = subprocess.run([sys.executable, "-m", "tipo", *cli_args(case["request"])], capture_output=True, check=True)
    assert json.loads(run.stdout)["prompt"] == case["prompt"]
