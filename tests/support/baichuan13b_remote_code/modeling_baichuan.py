"""Model classes of the tiny Baichuan-13B-layout test checkpoint.

The network is the demo model's (Baichuan-13B's weight names: ``W_pack``, ``o_proj``, a gated MLP,
ALiBi). What matters here is how each published revision builds chat prompts:

* ``BaichuanForCausalLM`` is the revision with ``generation_utils.py``: its ``chat()`` (the demo
  model's, inherited) calls ``generation_utils.build_chat_input``; the first release's
  ``_build_chat_input`` is still in the class, unused by ``chat()``, as in the published files.
* ``BaichuanFirstReleaseForCausalLM`` is the first release: ``chat()`` calls
  ``_build_chat_input``, whose rule closes every reply with eos and always appends the
  assistant token.
"""

import torch

from .configuration_baichuan import BaichuanConfig
from .modeling_kubechat_demo import KubechatDemoForCausalLM


class BaichuanForCausalLM(KubechatDemoForCausalLM):
    """A Baichuan-13B causal LM whose ``chat()`` builds prompts with ``generation_utils``."""

    config_class = BaichuanConfig

    def _build_chat_input(self, tokenizer, messages, max_new_tokens=0):
        """The first release's prompt rule (1 x length ids on the model's device).

        Newest message first: a user message closes a round, ``[user] text``; an assistant
        message is ``[assistant] text [eos]``. Rounds are kept while they fit
        ``max(model_max_length // 2, model_max_length - max_new_tokens)``; messages before the
        first user message belong to no round and are dropped; other roles are refused. Then
        the assistant token, whoever spoke last.
        """
        gen = self.generation_config
        length = self.config.model_max_length
        budget = max(length // 2, length - (max_new_tokens or gen.max_new_tokens))
        kept, pending = [], []
        for message in reversed(messages):
            text_ids = tokenizer.encode(message["content"])
            if message["role"] == "assistant":
                pending = [gen.assistant_token_id, *text_ids, gen.eos_token_id, *pending]
            elif message["role"] == "user":
                pending = [gen.user_token_id, *text_ids, *pending]
                if kept and len(kept) + len(pending) > budget:
                    break
                kept = pending + kept
                pending = []
                if len(kept) >= budget:
                    break
            else:
                raise ValueError(f"message role not supported yet: {message['role']}")
        ids = [*kept[-budget:], gen.assistant_token_id]
        return torch.tensor([ids], dtype=torch.long, device=self.device)


class BaichuanFirstReleaseForCausalLM(BaichuanForCausalLM):
    """The first release: ``chat()`` builds prompts with the model's ``_build_chat_input``."""

    @torch.no_grad()
    def chat(self, tokenizer, messages, stream=False, generation_config=None):
        """The reply to ``messages`` (``stream`` is not supported by this test checkpoint)."""
        if stream:
            raise NotImplementedError("the test checkpoint's first release does not stream")
        generation_config = generation_config or self.generation_config
        input_ids = self._build_chat_input(tokenizer, messages, generation_config.max_new_tokens)
        output = self.generate(input_ids, generation_config=generation_config)
        return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
