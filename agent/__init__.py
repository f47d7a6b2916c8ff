"""The kubechat agent: the lease side of a worker whose engine is another server (vLLM)."""
