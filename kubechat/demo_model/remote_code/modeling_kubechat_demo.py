"""The kubechat demo model: a tiny decoder-only transformer laid out like Baichuan-13B.

Pre-norm decoder layers with RMSNorm, one packed query/key/value projection (``W_pack``), an
output projection (``o_proj``), a gated SiLU MLP (``gate_proj``/``up_proj``/``down_proj``) and
ALiBi attention biases instead of position embeddings. The KV cache is a transformers ``Cache``.
Because ALiBi depends only on the distance between a query and a key, left padding (with its
attention mask) does not change what the real tokens see.
"""

import math
from collections.abc import Iterator
from threading import Thread
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_kubechat_demo import KubechatDemoConfig
from .generation_utils import build_chat_input

# transformers 5 renamed ``past_key_values`` to ``cache`` in model outputs; accept both spellings.
_OUTPUT_CACHE_FIELD = (
    "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes: a geometric sequence, interleaved when heads are not a power of 2."""

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two_slopes(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two_slopes(closest)
        slopes += power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def attention_bias(
    slopes: torch.Tensor,
    attention_mask: torch.Tensor,
    query_length: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Additive attention bias of shape (batch, heads, query_length, key_length).

    ``attention_mask`` is (batch, key_length) with 1 for real tokens, covering the cached tokens
    and the new ones; the queries are the last ``query_length`` positions. Each allowed pair gets
    ``-slope * distance``; future and padded keys get the dtype's minimum.
    """
    key_length = attention_mask.shape[-1]
    device = attention_mask.device
    key_pos = torch.arange(key_length, device=device)
    query_pos = key_pos[-query_length:]
    distance = (query_pos[:, None] - key_pos[None, :]).to(torch.float32)  # (q, k), >= 0 allowed
    bias = -slopes.to(device)[:, None, None] * distance  # (heads, q, k)
    allowed = (distance >= 0)[None, :, :] & attention_mask[:, None, :].bool()  # (batch, q, k)
    minimum = torch.finfo(dtype).min
    bias = bias[None].to(dtype).expand(attention_mask.shape[0], -1, -1, -1)
    return bias.masked_fill(~allowed[:, None], minimum)


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (no centring, no bias)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class MLP(nn.Module):
    """Gated feed-forward block: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: KubechatDemoConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """Multi-head self-attention with a packed qkv projection and an additive ALiBi bias."""

    def __init__(self, config: KubechatDemoConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.W_pack = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor,
        cache: Cache | None,
    ) -> torch.Tensor:
        batch, length, hidden = hidden_states.shape
        qkv = self.W_pack(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, len, dim)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, hidden))


class KubechatDemoDecoderLayer(nn.Module):
    """One pre-norm transformer block: attention then MLP, each with a residual connection."""

    def __init__(self, config: KubechatDemoConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(
        self, hidden_states: torch.Tensor, bias: torch.Tensor, cache: Cache | None
    ) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(
            self.input_layernorm(hidden_states), bias, cache
        )
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class KubechatDemoPreTrainedModel(PreTrainedModel):
    """Shared settings: config class, weight init, what accelerate must keep on one device."""

    config_class = KubechatDemoConfig
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["KubechatDemoDecoderLayer"]
    supports_gradient_checkpointing = False
    _supports_sdpa = True


class KubechatDemoModel(KubechatDemoPreTrainedModel):
    """Embeddings, decoder layers and the final norm; returns hidden states."""

    def __init__(self, config: KubechatDemoConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            KubechatDemoDecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Run the decoder over new tokens, reading and extending ``cache`` when given."""
        cache = cache if cache is not None else past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        batch, length = inputs_embeds.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(
                batch, past + length, dtype=torch.long, device=inputs_embeds.device
            )
        elif attention_mask.dim() != 2:
            raise ValueError("attention_mask must be 2-D (batch, past + new tokens)")
        slopes = alibi_slopes(self.config.num_attention_heads)
        bias = attention_bias(slopes, attention_mask, length, inputs_embeds.dtype)

        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(hidden_states, bias, cache if use_cache else None)
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            **{_OUTPUT_CACHE_FIELD: cache if use_cache else None},
        )


class KubechatDemoForCausalLM(KubechatDemoPreTrainedModel, GenerationMixin):
    """The decoder plus a language-model head, ``generate`` and Baichuan-style ``chat``."""

    def __init__(self, config: KubechatDemoConfig):
        super().__init__(config)
        self.model = KubechatDemoModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits for every new position (or the last ``logits_to_keep``), and the LM loss.

        ``labels`` are the input ids with ``-100`` wherever no loss is wanted; they are shifted
        here, so position t is scored on predicting token t + 1.
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        hidden_states = outputs.last_hidden_state
        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, **{_OUTPUT_CACHE_FIELD: getattr(outputs, _OUTPUT_CACHE_FIELD)}
        )

    @torch.no_grad()
    def chat(
        self,
        tokenizer,
        messages: list[dict[str, str]],
        stream: bool = False,
        generation_config: GenerationConfig | None = None,
    ) -> str | Iterator[str]:
        """Answer the last user message of ``messages`` like Baichuan-13B-Chat's ``chat``.

        Returns the reply text, or with ``stream=True`` an iterator of the growing reply text.
        ``generation_config`` defaults to the model's (``generation_config.json``).
        """
        generation_config = generation_config or self.generation_config
        input_ids = build_chat_input(self, tokenizer, messages, generation_config.max_new_tokens)
        if not stream:
            output = self.generate(input_ids, generation_config=generation_config)
            return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
        return self._stream_chat(tokenizer, input_ids, generation_config)

    def _stream_chat(
        self, tokenizer, input_ids: torch.LongTensor, generation_config: GenerationConfig
    ) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        worker = Thread(
            target=self.generate,
            kwargs={
                "inputs": input_ids,
                "generation_config": generation_config,
                "streamer": streamer,
            },
            daemon=True,
        )
        worker.start()
        text = ""
        for piece in streamer:
            if piece:  # the streamer yields "" while a character's bytes are incomplete
                text += piece
                yield text
        worker.join()
