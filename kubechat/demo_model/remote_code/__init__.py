"""Remote code of the kubechat demo model.

These modules are copied next to the weights and named in ``config.json``'s ``auto_map``, so
transformers loads them standalone with ``trust_remote_code=True``. They may therefore import only
torch, transformers, sentencepiece, the standard library and each other (relative imports).
The builder imports the same classes from this package, so there is one implementation.
"""

from .configuration_kubechat_demo import KubechatDemoConfig
from .generation_utils import build_chat_input
from .modeling_kubechat_demo import KubechatDemoForCausalLM
from .tokenization_kubechat_demo import KubechatDemoTokenizer

# Files copied into a model directory, in the order a reader would look at them.
REMOTE_CODE_FILES = (
    "configuration_kubechat_demo.py",
    "modeling_kubechat_demo.py",
    "tokenization_kubechat_demo.py",
    "generation_utils.py",
)

__all__ = [
    "REMOTE_CODE_FILES",
    "KubechatDemoConfig",
    "KubechatDemoForCausalLM",
    "KubechatDemoTokenizer",
    "build_chat_input",
]
