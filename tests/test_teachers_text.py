"""MiniLM text teacher, prompt templates and prompt-ensembled class embeddings."""

import json

import pytest
import torch

from svl.teachers import create_teacher
from svl.vocab import class_embeddings, format_prompts, load_templates


@pytest.fixture(scope="module")
def minilm():
    return create_teacher("minilm", device="cpu")


def test_minilm_semantics(minilm):
    assert minilm.dim == 384 and minilm.id == "minilm-l6-v2"
    e = minilm.embed_texts(["chair", "stool", "airplane"])
    assert e.shape == (3, 384) and e.dtype == torch.float32 and not e.requires_grad
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.1  # chair is nearer stool than airplane


def test_batching_does_not_change_embeddings(minilm):
    texts = [f"a point cloud model of a {w}." for w in ("lamp", "sofa", "guitar", "bathtub", "car")]
    minilm.batch_size = 2
    try:
        small = minilm.embed_texts(texts)
    finally:
        minilm.batch_size = 128
    whole = minilm.embed_texts(texts)
    assert torch.allclose(small, whole, atol=1e-5)


def test_templates_shipped_and_match_source():
    t = load_templates()
    assert len(t) == 64 and t[0] == "a point cloud model of {}."
    assert all(s.count("{}") == 1 for s in t)
    assert load_templates("shapenet_64") == t
    with pytest.raises(ValueError, match="unknown template set"):
        load_templates("nope")


def test_shipped_templates_equal_the_uni3d_source(shared_data):
    src = json.loads((shared_data / "labels" / "uni3d_templates.json").read_text())
    assert src["modelnet40_64"] == load_templates()


def test_class_embeddings_equal_mean_of_prompt_embeddings(minilm):
    names = ["flower_pot", "chair"]
    emb = class_embeddings(minilm, names)
    assert emb.shape == (2, 384)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    # independent reference: embed each class's 64 prompts separately, average, normalise
    for k, name in enumerate(names):
        prompts = format_prompts(name)
        assert prompts[0] == f"a point cloud model of {name.replace('_', ' ')}."
        ref = minilm.embed_texts(prompts).mean(0)
        ref = ref / ref.norm()
        assert torch.allclose(emb[k], ref, atol=1e-5)
    custom = class_embeddings(minilm, ["chair"], templates=["a {}."])
    assert torch.allclose(custom[0], minilm.embed_texts(["a chair."])[0], atol=1e-5)


def test_class_embeddings_zero_shot_sense(minilm):
    emb = class_embeddings(minilm, ["airplane", "chair", "guitar"])
    q = minilm.embed_texts(["a wooden stool", "a jet plane", "an electric bass"])
    assert (q @ emb.T).argmax(1).tolist() == [1, 0, 2]


def test_bad_inputs(minilm):
    with pytest.raises(ValueError, match="exactly one"):
        class_embeddings(minilm, ["chair"], templates=["no slot"])
    with pytest.raises(ValueError, match="empty"):
        class_embeddings(minilm, [])
    with pytest.raises(ValueError, match="single string"):
        minilm.embed_texts("chair")
    with pytest.raises(ValueError, match="no image tower"):
        minilm.embed_images(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown teacher"):
        create_teacher("clip-vit")


def test_svl_embed_cli_texts(tmp_path, run_cli, minilm):
    import numpy as np

    f = tmp_path / "texts.txt"
    f.write_text("a chair\n\na stool\nan airplane\n")
    out = tmp_path / "emb.npy"
    rc, stdout, err = run_cli("embed", "--texts", f, "--cache-dir", tmp_path / "s", "-o", out)
    assert rc == 0, err
    e = np.load(out)
    ref = minilm.embed_texts(["a chair", "a stool", "an airplane"]).numpy()
    assert e.shape == (3, 384) and np.allclose(e, ref, atol=1e-5)
    assert "minilm-l6-v2" in stdout


def test_svl_embed_deprecated_out_flag_still_writes(tmp_path, run_cli, minilm):
    import numpy as np

    f = tmp_path / "texts.txt"
    f.write_text("a chair\nan airplane\n")
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    rc, _, err = run_cli("embed", "--texts", f, "--cache-dir", tmp_path / "s", "--output", a)
    assert rc == 0, err
    rc, out, err = run_cli("embed", "--texts", f, "--cache-dir", tmp_path / "s", "--out", b)
    assert rc == 0, err
    assert f"wrote {b}" in out
    assert np.array_equal(np.load(a), np.load(b))
    rc, text, _ = run_cli("embed", "--help")
    assert rc == 0
    assert "-o FILE.npy, --output FILE.npy" in text and "--out " not in text  # hidden alias
