"""The zoo's interchange with other tools: Hugging Face transformers folders (import,
:mod:`zoo.interop.hf`; export, :mod:`zoo.interop.hf_export` and the ``trust_remote_code`` classes
of :mod:`zoo.interop.modeling_moezoo`; the key maps of :mod:`zoo.interop.convert`), the
lm-evaluation-harness model (:mod:`zoo.interop.harness`), and the one loader of model sources
(:mod:`zoo.interop.loader`), which reads zoo releases and transformers folders alike.

This room sits above the hub (names, manifest, fetch, releases) and imports it, never the other
way round. Its modules load torch, safetensors, transformers or lm-eval, so they are imported by
name, not from here: ``import zoo.interop`` stays light.
"""
