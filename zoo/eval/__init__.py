"""Evaluating zoo models: bits per byte on a corpus split (:mod:`zoo.eval.bpb`, Lightning-free). The
lm-evaluation-harness model is interchange and lives in :mod:`zoo.interop.harness`."""

from zoo.eval.bpb import evaluate_model, evaluate_source, tokenizer_spec

__all__ = ["evaluate_model", "evaluate_source", "tokenizer_spec"]
