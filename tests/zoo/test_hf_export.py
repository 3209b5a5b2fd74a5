"""Every shipped zoo checkpoint exported to a folder transformers loads (AutoModelForCausalLM with
trust_remote_code, AutoTokenizer): the zoo's logits exactly, the zoo's greedy tokens from
generate(), the byte tokenizer id for id, and lm-eval's own HFLM scoring it."""

import json
import re

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.hub import shipped_store
from zoo.interop.hf_export import byte_tokenizer_json
from zoo.text import DEFAULT_SAMPLING

transformers = pytest.importorskip("transformers")
# one checkpoint per entry: the leaderboard's extra seeds ("<entry>-seed<k>") share their entry's code path
SHIPPED = sorted(n for n in json.loads((shipped_store() / "manifest.json").read_text())["checkpoints"] if not re.search(r"-seed\d+$", n))
TEXT = "ROMEO: héllo — wörld\n\n\tend"


@pytest.fixture(autouse=True)
def shipped_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HUB", shipped_store().as_uri())
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))


def test_the_byte_tokenizer_in_tokenizers_format_is_id_for_id():
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(byte_tokenizer_json())
    every_byte = bytes(range(256)).decode("latin-1")
    assert tokenizer.encode(TEXT).ids == list(TEXT.encode())
    assert tokenizer.encode(every_byte).ids == list(every_byte.encode())
    assert tokenizer.decode(list(TEXT.encode())) == TEXT
    assert tokenizer.get_vocab_size() == 256


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_loads_in_transformers_with_the_zoos_logits(name, tmp_path, capfd):
    out = tmp_path / name
    assert main(["export-hf", name, str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    native = {"dense-tiny": "llama", "moe-tiny": "mixtral"}.get(name)  # transformers' own code where exact
    assert config["model_type"] == (native or "moezoo")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out), trust_remote_code=True)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert ids[0].tolist() == list(TEXT.encode()) and tokenizer.decode(ids[0]) == TEXT
    ours = zoo.create_model(name, pretrained=True).eval()
    vocab = ours.config.vocab_size
    with torch.no_grad():
        theirs, expected = model(ids).logits, ours(ids)
    if native:  # transformers' own Llama / Mixtral: the same math in another order of float operations
        torch.testing.assert_close(theirs, expected, rtol=1e-4, atol=1e-4)
        engine = ours
    else:  # the zoo's inference form behind transformers' classes: its logits (to float rounding), and a
        # column for <|endoftext|> (one id past the vocabulary) that is never predicted
        engine = zoo.create_model(name, pretrained=True, inference=True)
        with torch.no_grad():
            torch.testing.assert_close(theirs[..., :vocab], engine(ids), rtol=0, atol=1e-5)
            assert theirs.shape[-1] == config["vocab_size"] == vocab + 1 and bool((theirs[..., vocab] < -1e30).all())
        # the training form for fine-tuning: the zoo's own decoder with the release's latent weights
        # (packing re-derives each scale as a mean, so they may differ in the last bit), gradients
        trainable = transformers.AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True, zoo_inference=False)
        for key, value in ours.state_dict().items():
            torch.testing.assert_close(trainable.model.state_dict()[key], value, rtol=1e-6, atol=0)
        trainable.train()
        trainable(ids, labels=ids).loss.backward()
        assert trainable.model.tok_embeddings.weight.grad is not None
        if ours.config.weight_quant == "ternary":  # packed at 2 bits on disk: under one byte a parameter (fp32: four)
            assert (out / "model.safetensors").stat().st_size < sum(p.numel() for p in ours.parameters())
    card = (out / "README.md").read_text()  # a model card for every export, plain ones without remote code
    assert card.startswith("---\nlicense:") and "activated per token" in card
    assert ("trust_remote_code=True" in card) == (not native)
    generated = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :]
    assert generated.tolist() == zoo.generate(engine, ids, 12, temperature=0)[0].tolist()
    # generate()'s default is the zoo's one sampling default, read by either loader
    defaults = model.generation_config
    assert defaults.do_sample and (defaults.temperature, defaults.top_p) == (DEFAULT_SAMPLING["temperature"], DEFAULT_SAMPLING["top_p"])
    generation = json.loads((out / "generation_config.json").read_text())
    assert "max_length" not in generation and all(generation.get(k, 0) < config["vocab_size"] for k in ("bos_token_id", "eos_token_id"))
    warnings = capfd.readouterr().err
    assert "max_length" not in warnings and "within the vocabulary" not in warnings, warnings


def test_generate_reuses_the_kv_cache_and_restarts_on_a_new_prompt(tmp_path):
    assert main(["export-hf", "bitnet-qsparse-tiny", str(tmp_path / "x")]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "x"), trust_remote_code=True)
    engine = zoo.create_model("bitnet-qsparse-tiny", pretrained=True, inference=True)
    calls = []
    original = model.model.forward
    model.model.forward = lambda tokens, *a, **k: calls.append(tokens.shape[1]) or original(tokens, *a, **k)
    for prompt in (b"ROMEO:", b"JULIET: a longer prompt"):
        ids = torch.tensor([list(prompt)])
        calls.clear()
        generated = model.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1] :]
        assert generated.tolist() == zoo.generate(engine, ids, 20, temperature=0)[0].tolist()
        # one pass over the prompt (a long one through the modules), then one compiled step a token
        assert calls in ([], [ids.shape[1]])
    # past the window: the cache restarts from the most recent half window, as zoo.generate does
    window = engine.config.max_seq_len
    ids = torch.tensor([list(b"To be, or not to be") * 4])[:, : window - 4]
    generated = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :]
    assert generated.tolist() == zoo.generate(engine, ids, 12, temperature=0)[0].tolist()


def zoo_logprob(model, context: list[int], continuation: bytes) -> float:
    """The zoo model's sum of log-probs of ``continuation`` after ``context``."""
    tokens = torch.tensor([[*context, *continuation]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(tokens[:, :-1]).float(), -1)
    n = len(continuation)
    return logprobs[0, -n:].gather(-1, tokens[0, -n:, None]).sum().item()


@pytest.mark.parametrize("name", SHIPPED)
def test_lm_eval_scores_every_exported_model_through_hflm(name, tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    out = tmp_path / "export"
    assert main(["export-hf", name, str(out)]) == 0
    native = json.loads((out / "config.json").read_text())["model_type"] != "moezoo"
    # no extra argument: transformers' own Llama / Mixtral have the newline as their bos
    lm = HFLM(pretrained=str(out), trust_remote_code=True, batch_size=1, device="cpu")
    # what the export runs: transformers' own code, or the zoo's inference form
    model = zoo.create_model(name, pretrained=True, inference=not native).eval()
    request = Instance(request_type="loglikelihood", doc={}, arguments=("ROMEO: good", " morrow"), idx=0)
    ((score, greedy),) = lm.loglikelihood([request])
    assert score == pytest.approx(zoo_logprob(model, list(b"ROMEO: good"), b" morrow"), abs=1e-3) and isinstance(greedy, bool)
    # an empty context is conditioned on the separator's "\n" (moezoo: <|endoftext|> reads as it)
    empty = Instance(request_type="loglikelihood", doc={}, arguments=("", "ROMEO"), idx=1)
    ((score, _),) = lm.loglikelihood([empty])
    assert score == pytest.approx(zoo_logprob(model, [10], b"ROMEO"), abs=1e-3)
    if not native:  # generation stops at the task's stop string, and a newline survives decoding
        until = Instance(request_type="generate_until", doc={}, arguments=("ROMEO:", {"until": ["\n\n"], "max_gen_toks": 12}), idx=2)
        (text,) = lm.generate_until([until])
        assert "\n\n" not in text and len(text.encode()) <= 12


FALLBACK_SCRIPT = """
import importlib.abc, json, sys
class NoMoezoo(importlib.abc.MetaPathFinder):  # as if moezoo were not installed
    def find_spec(self, name, path, target=None):
        if name == "zoo" or name.startswith("zoo."):
            raise ImportError(name)
sys.meta_path.insert(0, NoMoezoo())
import torch, transformers
torch.set_num_threads(1)  # as the suite (conftest): the same float sums as the reference below
ids = torch.tensor([json.loads(sys.argv[1])])
out = {}
for folder in sys.argv[2:]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert type(model.model).__name__ == "TorchDecoder" and "zoo" not in sys.modules
    with torch.no_grad():
        logits = model(ids).logits[0]
    generated = model.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1]:]
    out[folder] = {"logits": logits.tolist(), "generated": generated.tolist()}
print(json.dumps(out))
"""


def test_without_moezoo_the_export_runs_its_plain_torch_twin_exactly(tmp_path):
    """Every shipped checkpoint exported with the zoo's classes loads where moezoo cannot be
    imported (moezoo_torch.py beside the modeling file): the zoo's logits and greedy tokens."""
    import subprocess
    import sys

    folders = {}
    for name in SHIPPED:
        folders[name] = tmp_path / name
        assert main(["export-hf", name, str(folders[name]), "--model-type", "moezoo"]) == 0
    ids = list(TEXT.encode())
    script = [sys.executable, "-c", FALLBACK_SCRIPT, json.dumps(ids), *map(str, folders.values())]
    result = subprocess.run(script, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for name, folder in folders.items():
        # the zoo's torch reference: int8 activations turn a last-bit difference into a rounding
        # step, so the twin is held to the reference's own arithmetic, not the compiled kernels'
        ours = zoo.create_model(name, pretrained=True, kernel="torch").eval()
        with torch.no_grad():
            expected = ours(torch.tensor([ids]))[0]
        got = torch.tensor(out[str(folder)]["logits"])
        torch.testing.assert_close(got[:, : expected.shape[-1]], expected, rtol=0, atol=1e-5, msg=name)
        assert out[str(folder)]["generated"] == zoo.generate(ours, torch.tensor([ids]), 10, temperature=0)[0].tolist(), name
