"""Build the benchmark model: no download, same sizes every time.

    python benchmarks/bench_model.py OUT_DIR

A 33.5M-parameter LlamaForCausalLM (hidden 512, 8 layers, 8 heads, ffn 1376, fp32) with random
weights from seed 0, and a SentencePiece-style BPE tokenizer (vocab 8000) trained on this Python's
standard-library sources. The end-of-sequence row of ``lm_head`` is zeroed so greedy decoding
never stops early: every request runs to ``max_tokens``. The chat template is plain (BOS, then
the message contents), so prompts cost the same on every server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tokenizers import SentencePieceBPETokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported as benchmarks.*
from training_text import stdlib_lines

VOCAB = 8000
SHAPE = {
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "max_position_embeddings": 2048,
}
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
MARKER = "kubechat_bench.json"
TRAINING_TEXT_BYTES = 8_000_000


def build(out_dir: Path) -> Path:
    """Write the model, tokenizer and a marker into ``out_dir`` (skipped when already there)."""
    out_dir = Path(out_dir)
    if (out_dir / MARKER).is_file():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    # SentencePiece-style BPE (metaspace pre-tokenizer), trained by the tokenizers library
    backend = SentencePieceBPETokenizer(add_prefix_space=True)
    backend.train_from_iterator(
        stdlib_lines(TRAINING_TEXT_BYTES),
        vocab_size=VOCAB,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0, **SHAPE)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[config.eos_token_id].zero_()  # EOS logit stays 0: rarely the max
    model.save_pretrained(out_dir)
    params = sum(p.numel() for p in model.parameters())
    (out_dir / MARKER).write_text(json.dumps({"parameters": params, **SHAPE, "vocab": VOCAB}))
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        sys.exit(2)
    print(build(Path(sys.argv[1])))
