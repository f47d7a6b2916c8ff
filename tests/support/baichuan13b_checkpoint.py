"""A tiny random checkpoint in Baichuan-13B-Chat's layout, built locally for tests.

What Baichuan-13B-Chat publishes, at test size: ``config.json`` with ``model_type`` ``baichuan``
and an ``auto_map`` into remote code (``configuration_baichuan``, ``modeling_baichuan``,
``tokenization_baichuan``), ``generation_utils.py`` with ``build_chat_input``,
``generation_config.json`` with Baichuan's role token ids and sampling defaults, a sentencepiece
``tokenizer.model`` whose ``tokenizer_config.json`` adds neither bos nor eos, and the weights as
``pytorch_model-0000N-of-0000M.bin`` shards with their index. The remote code lives in
``baichuan13b_remote_code/`` beside this file; the network under it is the demo model's.

Two revisions: ``generation_utils`` (``model.chat()`` calls ``generation_utils.build_chat_input``;
the default) and ``first_release`` (``model.chat()`` calls the model's ``_build_chat_input``).
Either way the tokenizer is shaped like Baichuan's first published one (``super().__init__()``
before ``sp_model`` is loaded): transformers 5 cannot construct it on its own, so load it the way
the worker does (``kubechat.worker.loading.load_model``).
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import torch

from kubechat.demo_model.checkpoint import save_sharded_bin
from kubechat.demo_model.remote_code.configuration_kubechat_demo import KubechatDemoConfig
from kubechat.demo_model.remote_code.modeling_kubechat_demo import KubechatDemoForCausalLM
from kubechat.demo_model.tokenizer_train import train_sentencepiece

REMOTE_CODE = Path(__file__).with_name("baichuan13b_remote_code")
# The demo model's network, which the Baichuan classes above build on.
DEMO_FILES = ("configuration_kubechat_demo.py", "modeling_kubechat_demo.py")
OWN_FILES = (
    "configuration_baichuan.py",
    "modeling_baichuan.py",
    "tokenization_baichuan.py",
    "generation_utils.py",
)
REVISIONS = {
    "generation_utils": "BaichuanForCausalLM",
    "first_release": "BaichuanFirstReleaseForCausalLM",
}
USER_TOKEN, ASSISTANT_TOKEN = "<reserved_102>", "<reserved_103>"
# Baichuan-13B-Chat's figures, except the sizes of the network and the vocabulary.
MODEL_MAX_LENGTH = 4096
GENERATION = {
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "max_new_tokens": 2048,
    "do_sample": True,
    "temperature": 0.3,
    "top_k": 5,
    "top_p": 0.85,
    "repetition_penalty": 1.1,
}
SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 172,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
}
CORPUS = [
    "Which mountain is the second highest one in the world?",
    "K2, also known as Mount Godwin-Austen, is the second highest mountain in the world.",
    "Mount Everest is the highest mountain in the world, at about 8,849 metres.",
    "You are a helpful assistant. Answer briefly, in one sentence.",
    "世界第二高峰是乔戈里峰（K2）。",
]


def build_baichuan13b_checkpoint(
    out_dir: Path, *, revision: str = "generation_utils", seed: int = 0
) -> Path:
    """Write the checkpoint into ``out_dir`` (created; must not hold one already) and return it.

    ``revision`` is ``generation_utils`` or ``first_release`` (see the module's docstring);
    ``seed`` decides the random weights. Give checkpoints loaded in one process different folder
    names: transformers keys the remote classes it imported by folder name and file contents,
    so a second revision in a folder of the same name would get the first one's model class.
    """
    if revision not in REVISIONS:
        raise ValueError(f"revision must be one of {', '.join(REVISIONS)}, not {revision!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=False)
    tokenizer_model = out_dir / "tokenizer.model"
    train_sentencepiece(CORPUS * 4, tokenizer_model, vocab_size=320)
    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
    vocab_size = pieces.get_piece_size()
    user_id, assistant_id = pieces.piece_to_id(USER_TOKEN), pieces.piece_to_id(ASSISTANT_TOKEN)

    architecture = REVISIONS[revision]
    config = {
        "architectures": [architecture],
        "auto_map": {
            "AutoConfig": "configuration_baichuan.BaichuanConfig",
            "AutoModelForCausalLM": f"modeling_baichuan.{architecture}",
        },
        "model_type": "baichuan",
        "vocab_size": vocab_size,
        "model_max_length": MODEL_MAX_LENGTH,
        **SHAPE,
        "initializer_range": 0.02,
        "use_cache": True,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    _write_json(out_dir / "config.json", config)
    _write_json(
        out_dir / "generation_config.json",
        {**GENERATION, "user_token_id": user_id, "assistant_token_id": assistant_id},
    )
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_eos_token": False,
            "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaichuanTokenizer", None]},
            "bos_token": "<s>",
            "clean_up_tokenization_spaces": False,
            "eos_token": "</s>",
            "model_max_length": MODEL_MAX_LENGTH,
            "pad_token": "<unk>",
            "sp_model_kwargs": {},
            "tokenizer_class": "BaichuanTokenizer",
            "unk_token": "<unk>",
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"},
    )

    torch.manual_seed(seed)
    network = KubechatDemoForCausalLM(
        KubechatDemoConfig(vocab_size=vocab_size, model_max_length=MODEL_MAX_LENGTH, **SHAPE)
    )
    save_sharded_bin(network.state_dict(), out_dir, shards=2)

    demo_code = resources.files("kubechat.demo_model").joinpath("remote_code")
    for name in DEMO_FILES:
        with resources.as_file(demo_code.joinpath(name)) as source:
            shutil.copyfile(source, out_dir / name)
    for name in OWN_FILES:
        shutil.copyfile(REMOTE_CODE / name, out_dir / name)
    return out_dir


def broken_modeling_checkpoint(checkpoint: Path, folder: Path) -> Path:
    """A copy of ``checkpoint`` (one :func:`build_baichuan13b_checkpoint` built) under ``folder``
    whose modeling file reads a setting no config has: its own code fails as the model is built."""
    broken = Path(shutil.copytree(checkpoint, folder / "baichuan-broken-modeling"))
    modeling = broken / "modeling_baichuan.py"
    modeling.write_text(
        modeling.read_text().replace(
            "    config_class = BaichuanConfig\n",
            "    config_class = BaichuanConfig\n\n    def __init__(self, config):\n"
            "        super().__init__(config)\n        self.window = config.no_such_setting\n",
            1,
        )
    )
    return broken


def shipped_build_chat_input(checkpoint: Path):
    """The ``build_chat_input`` function of ``checkpoint``'s own ``generation_utils.py``,
    imported from the file (not through the worker)."""
    import importlib.util

    path = Path(checkpoint) / "generation_utils.py"
    spec = importlib.util.spec_from_file_location(f"shipped_generation_utils_{id(path)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_chat_input


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
