"""The lm-evaluation-harness adapter, offline: scores equal the model's own log-probs, greedy flags,
rolling windows as lm-eval cuts them, generation that stops at a stop string, loading by name."""

import sys

import pytest
import torch
import torch.nn.functional as F

from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder
from zoo.models.generate import generate

ALPHABET = "abcdefghijklmno\n"  # 16 symbols: every token id decodes to exactly one character
MAX_LEN = 16


class CharTokenizer:
    """One token per character of ALPHABET, so any generated id sequence round-trips through text."""

    name = "chars"
    identity = "chars-test"
    vocab_size = len(ALPHABET)

    def encode(self, text):
        return [ALPHABET.index(c) for c in text]

    def decode(self, ids):
        return "".join(ALPHABET[int(i)] for i in ids)


@pytest.fixture(scope="module")
def lm_and_model():
    pytest.importorskip("lm_eval")
    from zoo.interop.harness import ZooLM

    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=len(ALPHABET),
        dim=32,
        n_layers=1,
        n_heads=2,
        ffn_dim=64,
        max_seq_len=MAX_LEN,
        ffn_act="relu2",
        sparsity="topk",
        k_ratio=0.5,
        init_std=0.5,
    )
    model = Decoder(config).eval()
    return ZooLM(model=model, tokenizer=CharTokenizer(), batch_size=2), model


def instance(kind, args, idx=0):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=idx)


@torch.no_grad()
def logprob_of(model, inputs, targets):
    """Σ log p(targets | inputs) from one forward pass: targets are the last len(targets) next tokens."""
    logprobs = F.log_softmax(model(torch.tensor([inputs])).float(), dim=-1)[0]
    picked = logprobs[len(inputs) - len(targets) :]
    return float(picked.gather(-1, torch.tensor(targets)[:, None]).sum())


def test_loglikelihood_equals_summed_token_logprobs(lm_and_model):
    lm, model = lm_and_model
    tok = lm.tokenizer
    newline = tok.encode("\n")[0]
    cases = [("abc", "de"), ("", "fgh"), ("ab" * 20, "cd"), ("hello", "o"), ("k", "jjj")]
    results = lm.loglikelihood([instance("loglikelihood", c, i) for i, c in enumerate(cases)])
    for (context, continuation), (value, _) in zip(cases, results):
        ctx = tok.encode(context) or [newline]  # an empty context is conditioned on the separator
        cont = tok.encode(continuation)
        seq = (ctx + cont)[-(MAX_LEN + 1) :]  # the context is cut on the left to fit the window
        expected = logprob_of(model, seq[:-1], cont)
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-5), (context, continuation)
    # Trailing whitespace of a context belongs to the continuation, as in lm-eval's HF model.
    moved, explicit = lm.loglikelihood([instance("loglikelihood", ("abc\n", "de")), instance("loglikelihood", ("abc", "\nde"), 1)])
    assert moved[0] == pytest.approx(explicit[0], rel=1e-6) and moved[1] == explicit[1]


def test_greedy_flag(lm_and_model):
    lm, model = lm_and_model
    tok = lm.tokenizer
    context = "abc"
    greedy_ids = generate(model, torch.tensor([tok.encode(context)]), 5, temperature=0.0)[0].tolist()
    greedy_text = tok.decode(greedy_ids)
    other = ALPHABET[(greedy_ids[-1] + 1) % 15]  # any other letter for the last position
    (value, is_greedy), (_, not_greedy) = lm.loglikelihood(
        [instance("loglikelihood", (context, greedy_text)), instance("loglikelihood", (context, greedy_text[:-1] + other), 1)]
    )
    assert is_greedy is True and not_greedy is False
    assert value < 0


def test_rolling_loglikelihood_uses_lm_eval_windows(lm_and_model):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    lm, model = lm_and_model
    tok = lm.tokenizer
    text = "abcdefghijklmno" * 3 + "\nabc"  # 49 tokens: four windows of at most 16
    ids = tok.encode(text)
    windows = [make_disjoint_window(w) for w in get_rolling_token_windows(ids, tok.encode("\n")[0], MAX_LEN, 1)]
    # make_disjoint_window splits each window into (context, targets); the model reads both but the last.
    expected = sum(logprob_of(model, (context + targets)[:-1], targets) for context, targets in windows)
    (value,) = lm.loglikelihood_rolling([instance("loglikelihood_rolling", (text,))])
    assert value == pytest.approx(expected, rel=1e-5)
    assert len(windows) == 4


def test_long_continuation_is_scored_in_windows(lm_and_model):
    lm, _ = lm_and_model
    text = "abcdefghijklmno" * 3
    (rolling,) = lm.loglikelihood_rolling([instance("loglikelihood_rolling", (text,))])
    ((value, _),) = lm.loglikelihood([instance("loglikelihood", ("", text))])
    assert value == pytest.approx(rolling, rel=1e-6)


def test_generate_until_stops_at_stop_string(lm_and_model):
    lm, model = lm_and_model
    tok = lm.tokenizer
    context = "hello"
    full = tok.decode(generate(model, torch.tensor([tok.encode(context)]), 12, temperature=0.0)[0].tolist())
    stop = full[4:6]
    expected = full[: full.find(stop)]
    out = lm.generate_until(
        [
            instance("generate_until", (context, {"until": [stop], "max_gen_toks": 12})),
            instance("generate_until", (context, {"until": "zzz-never", "max_gen_toks": 12}), 1),
            instance("generate_until", ("abcde", {"until": [stop], "max_gen_toks": 12}), 2),  # same length: same batch
        ]
    )
    assert out[0] == expected and len(out[0]) <= 4
    assert out[1] == full
    alone = lm.generate_until([instance("generate_until", ("abcde", {"until": [stop], "max_gen_toks": 12}))])
    assert out[2] == alone[0]


def test_sampled_generation_is_seeded(lm_and_model):
    lm, _ = lm_and_model
    request = instance("generate_until", ("abc", {"until": [], "max_gen_toks": 10, "do_sample": True, "temperature": 1.0}))
    first, second = lm.generate_until([request]), lm.generate_until([request])
    assert first == second and len(first[0]) == 10


def test_create_from_arg_string_and_registry(tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval.api.registry import get_model

    from zoo.hub.release import save_release
    from zoo.interop.harness import ZooLM
    from zoo.tokenizer import ByteTokenizer

    config = ModelConfig(vocab_size=256, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=32)
    release = save_release(Decoder(config), ByteTokenizer(), tmp_path / "release", {"steps": 0})
    assert get_model("moezoo") is ZooLM
    lm = ZooLM.create_from_arg_string(f"pretrained={release},batch_size=4", {"device": "cpu"})
    assert lm.batch_size == 4 and lm.max_length == 32
    ((value, _),) = lm.loglikelihood([instance("loglikelihood", ("To be", " or not"))])
    assert value < 0


def test_missing_lm_eval_gives_install_hint(monkeypatch):
    import importlib

    import zoo.eval

    monkeypatch.delitem(sys.modules, "zoo.interop.harness", raising=False)
    for name in ("lm_eval", "lm_eval.api", "lm_eval.api.model", "lm_eval.api.registry"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install lm-eval"):
        importlib.import_module("zoo.interop.harness")
    assert zoo.eval.evaluate_model  # zoo.eval itself never needed it


def test_simple_evaluate_on_a_local_task(lm_and_model, tmp_path, monkeypatch):
    """lm-eval's own evaluator, offline, on two tasks whose data is a local JSON-lines file."""
    import json
    import math

    import lm_eval
    from lm_eval.tasks import TaskManager

    lm, _ = lm_and_model
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    docs = [{"context": "abcd", "target": "ef"}, {"context": "hello", "target": "o"}, {"context": "mno\nab", "target": "c"}]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = (
        f"dataset_path: json\ndataset_kwargs:\n  cache_dir: {tmp_path / 'hf'}\n  data_files:\n    test: {data}\ntest_split: test\n"
        'doc_to_text: "{{context}}"\ndoc_to_target: "{{target}}"\n'
    )
    (tmp_path / "zoo_ll.yaml").write_text(
        "task: zoo_ll\n" + common + "output_type: loglikelihood\nmetric_list:\n"
        "  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (tmp_path / "zoo_gen.yaml").write_text(
        "task: zoo_gen\n" + common + "output_type: generate_until\n"
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 6\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    results = lm_eval.simple_evaluate(
        model=lm, tasks=["zoo_ll", "zoo_gen"], task_manager=TaskManager(include_path=str(tmp_path)), log_samples=True, bootstrap_iters=0
    )
    direct = lm.loglikelihood([instance("loglikelihood", (d["context"], d["target"]), i) for i, d in enumerate(docs)])
    expected_ppl = math.exp(-sum(v for v, _ in direct) / len(direct))
    assert results["results"]["zoo_ll"]["perplexity,none"] == pytest.approx(expected_ppl, rel=1e-5)
    assert results["results"]["zoo_ll"]["acc,none"] == pytest.approx(sum(g for _, g in direct) / len(direct))
    generated = lm.generate_until(
        [instance("generate_until", (d["context"], {"until": ["\n"], "max_gen_toks": 6}), i) for i, d in enumerate(docs)]
    )
    samples = sorted(results["samples"]["zoo_gen"], key=lambda s: s["doc_id"])
    assert [s["filtered_resps"][0] for s in samples] == generated
    assert "exact_match,none" in results["results"]["zoo_gen"]
