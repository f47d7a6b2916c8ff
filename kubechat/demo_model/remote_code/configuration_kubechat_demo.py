"""Configuration of the kubechat demo model: a tiny decoder laid out like Baichuan-13B."""

from transformers import PretrainedConfig


class KubechatDemoConfig(PretrainedConfig):
    """Sizes of a decoder-only transformer with ALiBi positions, RMSNorm and a gated MLP.

    ``model_max_length`` is the longest sequence (prompt plus reply) the model is meant to see;
    ALiBi itself has no hard limit, but chat prompts are cut to fit it.
    """

    model_type = "kubechat_demo"

    def __init__(
        self,
        vocab_size: int = 1000,
        hidden_size: int = 128,
        intermediate_size: int = 344,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        hidden_act: str = "silu",
        model_max_length: int = 512,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        tie_word_embeddings: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.hidden_act = hidden_act
        self.model_max_length = model_max_length
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be a multiple of "
                f"num_attention_heads ({num_attention_heads})"
            )
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
