"""Inference-form releases (``zoo.models.inference.release``): what the engine holds, written and
read back memory-mapped, gives the same logits through the compiled step, for every table dtype
and projection kind; bad folders are refused in one line."""

import json

import pytest
import torch

import zoo
from zoo.kernels import compiled
from zoo.models.inference import decode_step_for
from zoo.models.inference.release import load_inference, save_inference
from zoo.models.inference.shapes import random_inference_model, shape_config

SMALL = dict(dim=256, n_heads=4, n_kv_heads=2, ffn_dim=512, vocab_size=300, n_layers=2, max_seq_len=64)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        caches = model.new_cache(1)
        model(torch.tensor([[5, 299]]), caches)
        step = decode_step_for(model).logits(model, torch.tensor([7]), caches) if compiled.available() else None
        return step if step is not None else model(torch.tensor([[7]]), caches)[:, -1]


@pytest.mark.parametrize("variant", ["bitnet-qsparse", "bitnet", "qsparse", "dense"])
@pytest.mark.parametrize("table", [torch.bfloat16, torch.int8, torch.float32])
def test_a_release_reads_back_the_same_engine(tmp_path, variant, table):
    model = random_inference_model(shape_config("llama-3.2-1b", variant, **SMALL), embedding_dtype=table, seed=4)
    expected = logits(model)
    save_inference(model, tmp_path / "release")
    loaded = zoo.from_pretrained(tmp_path / "release")  # the loader knows the folder
    assert loaded.tok_embeddings.weight.dtype == table and loaded.lm_head.weight is loaded.tok_embeddings.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert torch.equal(logits(loaded), expected)


def test_the_tensors_are_the_files_mapping(tmp_path):
    # nothing is copied at load: the packed tiles the kernel reads are views of the mapped file
    model = random_inference_model(shape_config("bitnet-2b4t", "bitnet", **SMALL))
    loaded = load_inference(save_inference(model, tmp_path / "release"))
    wqkv = loaded.layers[0].attn.wqkv
    assert not wqkv.tiles.untyped_storage().resizable()  # a mapping, not an allocation torch owns
    if compiled.available():
        assert wqkv.prepared_call().tiles.data_ptr() == wqkv.tiles.data_ptr()


def test_bad_folders_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="in training form"):
        save_inference(zoo.create_model("bitnet-tiny"), tmp_path / "x")
    folder = save_inference(random_inference_model(shape_config("bitnet-2b4t", "bitnet", **SMALL)), tmp_path / "r")
    (folder / "inference.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="expected format 'moezoo-inference'") as error:
        load_inference(folder)
    assert "\n" not in str(error.value)
