"""Loading fails loudly: every missing, unexpected or mis-shaped tensor is named in one error, an
unsupported architecture is named with the supported ones, and pickle checkpoints are never read."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from arch.hf import from_hf  # noqa: E402

pytestmark = pytest.mark.hf


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = tf.Gemma3TextConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=4)
    path = tmp_path_factory.mktemp("gemma3")
    tf.Gemma3ForCausalLM(cfg).save_pretrained(path)
    return path


def edited(src, dst, edit):
    """A copy of checkpoint ``src`` whose tensors went through ``edit(dict) -> dict``."""
    shutil.copytree(src, dst)
    tensors = edit(load_file(dst / "model.safetensors"))
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_missing_tensors_are_all_named(saved, tmp_path):
    gone = ["model.layers.0.self_attn.q_norm.weight", "model.layers.1.mlp.up_proj.weight"]
    path = edited(saved, tmp_path / "c", lambda t: {k: v for k, v in t.items() if k not in gone})
    with pytest.raises(ValueError, match="missing tensors \\(2\\)") as err:
        from_hf(path)
    assert all(name in str(err.value) for name in gone)


def test_unexpected_tensors_are_all_named(saved, tmp_path):
    extra = {"model.layers.0.self_attn.rotary.inv_freq": np.ones(4, np.float32),
             "lm_head.weight": np.ones((32, 16), np.float32)}  # tied model: a head is unexpected
    path = edited(saved, tmp_path / "c", lambda t: t | extra)
    with pytest.raises(ValueError, match="unexpected tensors \\(2\\)") as err:
        from_hf(path)
    assert all(name in str(err.value) for name in extra)


def test_shape_mismatches_are_all_named(saved, tmp_path):
    def edit(t):
        t["model.layers.1.self_attn.k_proj.weight"] = np.zeros((16, 16), np.float32)
        t["model.norm.weight"] = np.zeros(15, np.float32)
        return t

    with pytest.raises(ValueError, match="shape mismatches \\(2\\)") as err:
        from_hf(edited(saved, tmp_path / "c", edit))
    msg = str(err.value)
    assert "model.layers.1.self_attn.k_proj.weight: file (16, 16) vs model (8, 16)" in msg
    assert "model.norm.weight: file (15,) vs model (16,)" in msg


def test_unsupported_architecture(saved, tmp_path):
    path = tmp_path / "c"
    shutil.copytree(saved, path)
    hf = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(hf | {"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match="LlamaForCausalLM.*Gemma2ForCausalLM"):
        from_hf(path)


def test_pickle_checkpoints_are_refused(saved, tmp_path):
    path = tmp_path / "c"
    path.mkdir()
    shutil.copy(saved / "config.json", path / "config.json")
    (path / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin.*pickle checkpoints are never loaded"):
        from_hf(path)
