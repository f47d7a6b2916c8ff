"""The gateway: one OpenAI-compatible endpoint in front of every live worker."""
