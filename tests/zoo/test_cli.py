"""The ``zoo`` command's parser: light to build (``zoo --help`` imports no torch) and in step
with the modules whose commands it defers to."""

import subprocess
import sys

import pytest

from zoo.interop import hf_cli


def test_building_the_parser_imports_no_torch():
    code = (
        "import sys; from zoo.cli import build_parser; build_parser(); print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "zoo.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("list", "generate", "bench", "import-hf", "export-hf", "scaling"):
        assert command in result.stdout


def test_hf_argument_choices_match_the_converter():
    from zoo.hub.release import DTYPES
    from zoo.interop.convert import MODEL_TYPES

    assert hf_cli.HF_MODEL_TYPES == MODEL_TYPES
    assert set(hf_cli.DTYPE_NAMES) == set(DTYPES)


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    result = subprocess.run([sys.executable, "-m", "zoo.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"moezoo {version('moezoo')}"


def test_list_models_filters_like_timm():
    import zoo
    from zoo.hub.registry import list_models, pretrained_models

    assert zoo.list_models() == list_models()
    bitnet = zoo.list_models("*bitnet*")
    assert bitnet and all("bitnet" in name for name in bitnet) and set(bitnet) < set(list_models())
    assert zoo.list_models("*-tiny", pretrained=True) == [n for n in pretrained_models() if n.endswith("-tiny")]
    assert zoo.list_models("no-such-*") == []


def test_eval_reads_local_files_and_shows_progress(tmp_path, capsys):
    import json

    from zoo.cli import eval_data, main

    text = tmp_path / "notes.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 200)
    assert eval_data(str(text), "test", None) == ("text", {"test": [str(text)]})  # a file is never a Hub dataset name
    assert eval_data("shakespeare", "test", ["a.jsonl"]) == ("json", {"test": ["a.jsonl"]})
    assert eval_data("shakespeare", "test", None) == ("shakespeare", None)
    with pytest.raises(ValueError, match="--corpus must be text, json, csv or parquet"):
        eval_data("ptb", "test", ["a.txt"])
    assert main(["eval", "dense-tiny", "--data-files", str(text), "--max-batches", "2", "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["corpus"] == "text" and result["tokens"] == 2 * 2 * 256 and 0 < result["bpb"] < 8
    assert "/2 [" in captured.err and "batch" in captured.err  # the progress bar over 2 batches
