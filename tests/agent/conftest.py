"""Fixtures for the agent tests: real vLLM and the benchmark model."""

from tests.support.vllm import bench_model_dir, vllm_python

__all__ = ["bench_model_dir", "vllm_python"]
