"""Configuration of the tiny Baichuan-13B-layout test checkpoint (``model_type`` ``baichuan``).

Baichuan-13B's config keys (vocab_size, hidden_size, intermediate_size, num_hidden_layers,
num_attention_heads, hidden_act, model_max_length, rms_norm_eps, ...) on the demo model's
configuration class, which has the same ones.
"""

from .configuration_kubechat_demo import KubechatDemoConfig


class BaichuanConfig(KubechatDemoConfig):
    """Sizes of a Baichuan-13B-style decoder: ALiBi positions, RMSNorm, packed QKV."""

    model_type = "baichuan"
