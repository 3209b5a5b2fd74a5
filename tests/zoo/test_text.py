"""Text in, text out (zoo.text, zoo.generate / zoo.stream, zoo generate / zoo chat): pieces that
concatenate to the whole text, stop strings cut exactly, multi-byte characters never split, the
tokenizer travels with the model, and the inference form saves and loads as a release."""

import subprocess
import sys

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.models import Decoder, ModelConfig
from zoo.text import TextPieces, held_back
from zoo.tokenizer import ByteTokenizer

SMALL = ModelConfig(
    vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, weight_quant="ternary", act_quant="int8", max_seq_len=64
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return zoo.to_inference(Decoder(SMALL).eval())


def test_text_prompt_gives_text_and_ids_give_ids(model):
    prompt = "ROMEO:"
    text = zoo.generate(model, prompt, 20, temperature=0)
    ids = zoo.generate(model, torch.tensor([list(prompt.encode())]), 20, temperature=0)
    assert isinstance(text, str) and text == ByteTokenizer().decode(ids[0].tolist())
    with pytest.raises(ValueError, match="stop, stop_ids and report apply to a text prompt"):
        zoo.generate(model, torch.tensor([[1, 2]]), 4, stop="x")


def test_streamed_pieces_are_the_whole_text_and_seeded_sampling_repeats(model):
    whole = zoo.generate(model, "To be", 40, seed=7)
    pieces = list(zoo.stream(model, "To be", 40, seed=7))
    assert "".join(pieces) == whole and len(pieces) > 1
    assert zoo.generate(model, "To be", 40, seed=7) == whole


def test_stop_string_cuts_before_it_and_nothing_after_is_streamed(model):
    full = zoo.generate(model, "a", 40, temperature=0)
    stop = full[10:13]
    assert stop and stop in full
    expected = full[: full.index(stop)]
    report = {}
    pieces = list(zoo.stream(model, "a", 40, temperature=0, stop=[stop, "never appears"], report=report))
    assert "".join(pieces) == expected and stop not in "".join(pieces)
    assert report["finish_reason"] == "stop" and report["completion_tokens"] <= 13
    assert zoo.generate(model, "a", 40, temperature=0, stop=stop) == expected


def test_stop_id_ends_generation_and_length_is_reported(model):
    full = zoo.generate(model, torch.tensor([[97]]), 12, temperature=0)[0].tolist()
    report = {}
    text = zoo.generate(model, "a", 12, temperature=0, stop_ids=[full[5]], report=report)
    assert text == ByteTokenizer().decode(full[: full.index(full[5])]) and report["finish_reason"] == "stop"
    zoo.generate(model, "a", 12, temperature=0, report=report)
    assert report == {"prompt_tokens": 1, "completion_tokens": 12, "finish_reason": "length"}


def test_pieces_never_split_a_character_nor_release_a_possible_stop():
    pieces = TextPieces(ByteTokenizer(), stops=["END"])
    out = [pieces.push(b) for b in "é E".encode()]
    assert out == ["", "é", " ", ""]  # é's two bytes come out once whole; "E" may begin "END"
    assert pieces.push(ord("x")) == "Ex" and not pieces.stopped
    assert [pieces.push(b) for b in b"END"] == ["", "", ""]
    assert pieces.stopped and pieces.flush() == "" and pieces.text.startswith("é Ex")
    assert held_back("abcEN", ["END"]) == 2 and held_back("abc", ["END"]) == 0
    broken = TextPieces(ByteTokenizer())
    assert [broken.push(0xC3)] == [""] and broken.flush() == "\ufffd"  # a lone lead byte at the end is shown


def test_tokenizer_travels_with_loaded_models_and_inference_release_round_trips(model, tmp_path):
    loaded = zoo.from_pretrained("dense-tiny", inference=True)
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert isinstance(zoo.create_model("dense-tiny", pretrained=True).tokenizer, ByteTokenizer)
    zoo.save_pretrained(model, tmp_path / "engine")
    assert (tmp_path / "engine" / "tokenizer.json").is_file()
    back = zoo.from_pretrained(tmp_path / "engine")
    assert isinstance(back.tokenizer, ByteTokenizer)
    assert zoo.generate(back, "Hello", 16, temperature=0) == zoo.generate(model, "Hello", 16, temperature=0)
    with pytest.raises(ValueError, match="bf16=True rounds a training-form release"):
        zoo.save_pretrained(model, tmp_path / "other", bf16=True)


def test_zoo_generate_streams_with_stop_and_threads(capsys):
    prompt = "ROMEO:"
    engine = zoo.from_pretrained("dense-tiny", inference=True)
    full = zoo.generate(engine, prompt, 30, temperature=0)
    stop = full[8:10]
    assert main(["generate", "dense-tiny", "--prompt", prompt, "--max-new-tokens", "30", "--temperature", "0", "--threads", "1"]) == 0
    assert capsys.readouterr().out == prompt + full + "\n"
    escaped = stop.encode("unicode_escape").decode()
    assert main(["generate", "dense-tiny", "--prompt", prompt, "--max-new-tokens", "30", "--temperature", "0", "--stop", escaped]) == 0
    assert capsys.readouterr().out == prompt + full[: full.index(stop)] + "\n"


def test_zoo_chat_continues_each_line_and_bad_options_are_one_line():
    env_run = lambda *args, **kw: subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, timeout=300, **kw
    )
    chat = env_run("chat", "dense-tiny", "--temperature", "0", "--max-new-tokens", "20", input="ROMEO: speak\n/exit\n")
    assert chat.returncode == 0, chat.stderr
    engine = zoo.from_pretrained("dense-tiny", inference=True)
    assert chat.stdout == zoo.generate(engine, "ROMEO: speak\n", 20, temperature=0, stop="\n\n") + "\n"
    bad = env_run("generate", "dense-tiny", "--threads", "0")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == ["zoo generate: error: --threads must be >= 1, got 0"]
    bad = env_run("chat", "dense-tiny", "--stop", "\\x4")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--stop" in bad.stderr
