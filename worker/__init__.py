"""The model worker: loads a Hugging Face model and serves an OpenAI-compatible API."""
