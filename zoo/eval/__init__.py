"""Evaluating zoo models: bits per byte on a corpus split (:mod:`zoo.eval.bpb`, Lightning-free) and
an lm-evaluation-harness model (:mod:`zoo.eval.harness`, needs ``pip install lm-eval``; imported
only when used)."""

from zoo.eval.bpb import evaluate_model, evaluate_source, tokenizer_spec

__all__ = ["evaluate_model", "evaluate_source", "tokenizer_spec"]
