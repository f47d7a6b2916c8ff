"""The worker's OpenAI API on the demo model, driven by the official openai client."""

from __future__ import annotations

import contextlib
import itertools
import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoTokenizer

from tests.docs.commands import all_snippets, shell_commands
from tests.support.processes import free_port, kubechat_argv, running, until

from .conftest import SEED_QUESTION, Worker, worker_argv
from .test_internal_error import LONG as FAILING_PROMPT
from .test_internal_error import failing_checkpoint  # noqa: F401  (fixture, requested below)

GREEDY = {"temperature": 0}


def ask(worker: Worker, question: str = SEED_QUESTION, **kw):
    return worker.client.chat.completions.create(
        model=worker.model, messages=[{"role": "user", "content": question}], **{**GREEDY, **kw}
    )


def test_models_lists_the_served_name(worker: Worker) -> None:
    assert [m.id for m in worker.client.models.list().data] == [worker.model]


def test_models_carry_the_generation_config_defaults(worker: Worker, demo_model_dir) -> None:
    gen = json.loads((demo_model_dir / "generation_config.json").read_text())
    entry = httpx.get(f"{worker.url}/v1/models").json()["data"][0]
    assert entry["generation_defaults"] == {
        "temperature": gen["temperature"],
        "top_p": gen["top_p"],
        "max_tokens": gen["max_new_tokens"],
        "context_length": 512,
    }


def test_chat_answers_k2(worker: Worker) -> None:
    reply = ask(worker)
    assert "K2" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.role == "assistant"


def test_chat_streams_k2_with_usage(worker: Worker) -> None:
    full = ask(worker)
    stream = worker.client.chat.completions.create(
        model=worker.model,
        messages=[{"role": "user", "content": SEED_QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "K2" in text
    assert text == full.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == full.usage.model_dump()


def test_usage_equals_tokenizer_counts(worker: Worker, demo_model_dir) -> None:
    tok = AutoTokenizer.from_pretrained(demo_model_dir, trust_remote_code=True)
    reply = ask(worker)
    gen = _generation_config(demo_model_dir)
    prompt_ids = [gen["user_token_id"], *tok.encode(SEED_QUESTION), gen["assistant_token_id"]]
    assert reply.usage.prompt_tokens == len(prompt_ids)
    answer_ids = tok.encode(reply.choices[0].message.content)
    assert reply.usage.completion_tokens == len(answer_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_max_tokens_gives_finish_reason_length(worker: Worker) -> None:
    reply = ask(worker, max_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_stop_string_cuts_the_answer(worker: Worker) -> None:
    full = ask(worker).choices[0].message.content
    words = full.split()
    assert len(words) >= 3, full
    stop_word = words[len(words) // 2]
    reply = ask(worker, stop=[stop_word])
    assert reply.choices[0].message.content == full[: full.index(stop_word)]
    assert reply.choices[0].finish_reason == "stop"
    streamed = worker.client.chat.completions.create(
        model=worker.model,
        messages=[{"role": "user", "content": SEED_QUESTION}],
        stop=stop_word,
        stream=True,
        **GREEDY,
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == (full[: full.index(stop_word)])
    )


def test_n_choices_and_seeded_sampling_is_reproducible(worker: Worker) -> None:
    a = ask(worker, n=2, temperature=1.0, top_p=1.0, extra_body={"top_k": 0}, seed=7, max_tokens=12)
    b = ask(worker, n=2, temperature=1.0, top_p=1.0, extra_body={"top_k": 0}, seed=7, max_tokens=12)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert 2 <= a.usage.completion_tokens <= 24
    assert a.usage.prompt_tokens == b.usage.prompt_tokens  # counted once, not per choice


def test_completions_endpoint(worker: Worker, demo_model_dir) -> None:
    tok = AutoTokenizer.from_pretrained(demo_model_dir, trust_remote_code=True)
    prompt = "The second highest mountain"
    out = worker.client.completions.create(
        model=worker.model, prompt=prompt, max_tokens=5, temperature=0
    )
    assert out.usage.prompt_tokens == len(tok.encode(prompt))
    assert out.usage.completion_tokens == 5 or out.choices[0].finish_reason == "stop"
    assert isinstance(out.choices[0].text, str)
    echoed = worker.client.completions.create(
        model=worker.model, prompt=prompt, max_tokens=5, temperature=0, echo=True
    )
    assert echoed.choices[0].text == prompt + out.choices[0].text
    chunks = list(
        worker.client.completions.create(
            model=worker.model, prompt=prompt, max_tokens=5, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == out.choices[0].text


def _chat(worker: Worker, **kw):
    """A chat request for the seed question that sets only what ``kw`` sets."""
    messages = [{"role": "user", "content": SEED_QUESTION}]
    return worker.client.chat.completions.create(model=worker.model, messages=messages, **kw)


def _text(reply) -> str:
    return reply.choices[0].message.content


def test_generation_config_defaults_apply(worker: Worker, demo_model_dir) -> None:
    """A request that leaves sampling out gets generation_config.json's: its max_new_tokens
    and do_sample (the demo's temperature 0.3, top_p 0.85, top_k 5 keep the answer)."""
    gen = _generation_config(demo_model_dir)
    assert gen["do_sample"] and gen["max_new_tokens"] == 64  # what the checks below rely on
    # a reply that never meets eos stops at max_new_tokens, not at the worker's own fallback
    endless = _chat(worker, seed=1, extra_body={"ignore_eos": True})
    assert endless.usage.completion_tokens == gen["max_new_tokens"]
    assert endless.choices[0].finish_reason == "length"

    # it is sampled: past its trained answer the text changes with the seed, and a seed
    # repeats it
    def sampled(seed: int) -> str:
        return _text(_chat(worker, seed=seed, max_tokens=40, extra_body={"ignore_eos": True}))

    texts = {seed: sampled(seed) for seed in range(1, 7)}
    assert len(set(texts.values())) > 1
    assert sampled(1) == texts[1]
    # sampled with the config's settings, the seed question is still answered right
    assert "K2" in _text(_chat(worker, seed=11))


def readme_chat_bodies() -> list[dict]:
    """The JSON bodies of the README's curl commands to /chat/completions, as written (read by
    tests/docs/commands.py, which tests/docs uses to run those commands against a stack)."""
    return [
        json.loads(words[words.index("-d") + 1])
        for snippet in all_snippets()
        if snippet.path == "README.md" and snippet.language == "shell"
        for command in shell_commands(snippet.text)
        if (words := shlex.split(command))[0] == "curl"
        and any(word.endswith("/chat/completions") for word in words)
    ]


def test_the_readmes_requests_answer_k2(worker: Worker) -> None:
    """The README's exact requests, sent to a worker with only a seed added (so the sampled
    answer is reproducible): they set no sampling, so generation_config's defaults apply."""
    bodies = readme_chat_bodies()
    assert bodies, "no curl to /chat/completions found in README.md"
    for body in bodies:
        assert body["model"] == worker.model
        assert body["messages"] == [{"role": "user", "content": SEED_QUESTION}]
        assert not {"temperature", "top_p", "max_tokens"} & set(body)
        r = httpx.post(f"{worker.url}/v1/chat/completions", json={**body, "seed": 2024}, timeout=60)
        assert r.status_code == 200, r.text
        assert "K2" in r.json()["choices"][0]["message"]["content"]


def test_a_requests_own_values_beat_the_generation_config(worker: Worker) -> None:
    short = _chat(worker, seed=1, max_tokens=7, extra_body={"ignore_eos": True})
    assert short.usage.completion_tokens == 7
    assert short.choices[0].finish_reason == "length"
    # temperature 0 is greedy although the config samples: every seed gives the same text
    greedy = {
        _text(_chat(worker, seed=s, temperature=0, max_tokens=40, extra_body={"ignore_eos": True}))
        for s in range(1, 7)
    }
    assert len(greedy) == 1


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"messages": []}, "messages"),
    ],
)
def test_invalid_parameters_are_400(worker: Worker, params: dict, param: str) -> None:
    body = {"model": worker.model, "messages": [{"role": "user", "content": "hi"}], **params}
    r = httpx.post(f"{worker.url}/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"].startswith(param)


def test_invalid_json_is_400(worker: Worker) -> None:
    r = httpx.post(
        f"{worker.url}/v1/chat/completions",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]["message"]


def test_prompt_longer_than_context_is_400_with_both_lengths(worker: Worker) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(worker, question="mountain " * 2000)
    message = info.value.body["message"]
    context = _context_length(worker)
    assert f"{context} tokens" in message
    prompt_len = int(message.split("the prompt is ")[1].split(" ")[0])
    assert prompt_len > context
    with pytest.raises(openai.BadRequestError) as info:
        ask(worker, max_tokens=context)
    assert "max_tokens" in info.value.body["param"]


def test_unknown_model_is_404(worker: Worker) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        worker.client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["code"] == "model_not_found"


def test_metrics_count_requests_and_tokens(worker: Worker) -> None:
    before = _metric(worker, 'kubechat_worker_completion_tokens_total{model="kubechat-demo"}')
    reply = ask(worker)
    after = _metric(worker, 'kubechat_worker_completion_tokens_total{model="kubechat-demo"}')
    assert after - before == reply.usage.completion_tokens
    text = httpx.get(f"{worker.url}/metrics").text
    for name in (
        "kubechat_worker_time_to_first_token_seconds_count",
        "kubechat_worker_inter_token_latency_seconds_count",
        'kubechat_worker_requests_total{endpoint="chat",model="kubechat-demo",status="200"}',
        "kubechat_worker_in_flight",
        "kubechat_worker_queued",
    ):
        assert name in text


def counted(url: str, name: str, **labels: str) -> float:
    """The value of ``name``'s series with exactly ``labels`` on ``url``/metrics (0 if none)."""
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def requests_counted(url: str, model: str, status: int, endpoint: str = "chat") -> float:
    return counted(
        url, "kubechat_worker_requests_total", model=model, endpoint=endpoint, status=str(status)
    )


def streams_counted(url: str, model: str, outcome: str, endpoint: str = "chat") -> float:
    return counted(
        url, "kubechat_worker_streams_total", model=model, endpoint=endpoint, outcome=outcome
    )


def test_refused_requests_are_counted_by_their_status(worker: Worker) -> None:
    """400s from validation (before any of our code runs), 404s and 413s from the body limit
    count, under model "-"."""
    url = f"{worker.url}/v1/chat/completions"
    invalid_before = requests_counted(worker.url, "-", 400)
    unknown_before = requests_counted(worker.url, "-", 404)
    ok_before = requests_counted(worker.url, worker.model, 200)
    body = {"model": worker.model, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(url, json={**body, "temperature": 5}).status_code == 400
    assert httpx.post(url, json={"model": worker.model}).status_code == 400
    bad_json = httpx.post(url, content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    assert httpx.post(url, json={**body, "model": "no-such-model"}).status_code == 404
    too_large_before = requests_counted(worker.url, "-", 413)
    huge = {**body, "messages": [{"role": "user", "content": "x" * 5_000_000}]}
    assert httpx.post(url, json=huge).status_code == 413  # refused by the body limit
    assert requests_counted(worker.url, "-", 413) - too_large_before == 1
    assert httpx.post(url, json={**body, "max_tokens": 2}, timeout=30).status_code == 200
    assert requests_counted(worker.url, "-", 400) - invalid_before == 3
    assert requests_counted(worker.url, "-", 404) - unknown_before == 1
    assert requests_counted(worker.url, worker.model, 200) - ok_before == 1


def test_streams_are_counted_by_how_they_end(worker: Worker) -> None:
    """A stream counts when it ends: 200 if completed, 499 if the client left, never both."""
    model = worker.model
    ok, gone = requests_counted(worker.url, model, 200), requests_counted(worker.url, model, 499)
    completed = streams_counted(worker.url, model, "completed")
    cancelled = streams_counted(worker.url, model, "cancelled")
    chunks = list(ask(worker, stream=True, max_tokens=4))
    assert chunks[-1].choices[0].finish_reason == "length"
    until(lambda: streams_counted(worker.url, model, "completed") == completed + 1, timeout=10)
    assert requests_counted(worker.url, model, 200) == ok + 1

    body = {
        "model": model,
        "messages": [{"role": "user", "content": SEED_QUESTION}],
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{worker.url}/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert next(response.iter_lines()).startswith("data: ")
    until(lambda: streams_counted(worker.url, model, "cancelled") == cancelled + 1, timeout=10)
    assert requests_counted(worker.url, model, 499) == gone + 1
    assert requests_counted(worker.url, model, 200) == ok + 1  # the cut stream is not a 200
    assert streams_counted(worker.url, model, "completed") == completed + 1


def test_a_stream_ending_in_an_error_event_counts_as_its_error(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The checkpoint's forward raises: the stream's 200 header is out, but the request counts
    as the 500 its error event carries, and the stream as an error."""
    checkpoint = request.getfixturevalue("failing_checkpoint")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = kubechat_argv(
        "worker",
        "--model-path",
        str(checkpoint),
        "--model-names",
        "failing",
        "--trust-remote-code",
        "--conv-template",
        "chatml",
        "--port",
        str(port),
    )
    with running(argv, ready_url=f"{url}/health/ready", log_path=tmp_path / "w.log"):
        body = {"model": "failing", "prompt": FAILING_PROMPT, "max_tokens": 4, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert '"error"' in events[-2] and events[-1] == "data: [DONE]"
        until(lambda: streams_counted(url, "failing", "error", "completions") == 1, timeout=10)
        assert requests_counted(url, "failing", 500, "completions") == 1
        assert requests_counted(url, "failing", 200, "completions") == 0
        assert streams_counted(url, "failing", "completed", "completions") == 0


def test_health_endpoints(worker: Worker) -> None:
    assert httpx.get(f"{worker.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{worker.url}/health/ready").status_code == 200


@pytest.mark.slow
def test_full_worker_429_then_disconnect_stops_the_generation(demo_model_dir, tmp_path) -> None:
    """With --limit-worker-concurrency 1: a second request gets 429 with Retry-After; a client
    that goes away stops its generation at once, long before max_tokens, and frees its slot."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    max_tokens = 400
    body = {
        "model": "kubechat-demo",
        "messages": [{"role": "user", "content": SEED_QUESTION}],
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "stream": True,
    }
    tokens = 'kubechat_worker_completion_tokens_total{model="kubechat-demo"}'
    argv = worker_argv(demo_model_dir, port, "--limit-worker-concurrency", "1")
    with running(argv, ready_url=f"{url}/health/ready", log_path=tmp_path / "w.log"):
        tokens_before = _metric_url(url, tokens)
        with (
            httpx.Client(timeout=30) as c,
            c.stream(
                "POST", f"{url}/v1/chat/completions", json={**body, "ignore_eos": True}
            ) as first,
        ):
            assert first.status_code == 200
            lines = first.iter_lines()  # one iterator: dropping it would close the stream
            assert next(lines).startswith("data: ")  # the stream has started: its slot is taken
            busy = httpx.post(f"{url}/v1/chat/completions", json=body)
            assert busy.status_code == 429
            assert busy.json()["error"]["type"] == "rate_limit_error"
            assert int(busy.headers["Retry-After"]) >= 1
            stamps = [time.monotonic() for line in itertools.islice(lines, 12) if line]
        # the engine counts the sequence as running until its generation is cancelled
        until(
            lambda: (
                _metric_url(url, "kubechat_worker_running") == 0
                and _metric_url(url, "kubechat_worker_in_flight") == 0
            ),
            timeout=30,
            interval=0.02,
            what="generation stopped after the disconnect",
        )
        # the cut request's tokens are counted once it ends: far fewer than max_tokens (left
        # to run, it would count all of them; the lines read arrive in bursts, so their pace
        # is no measure of the engine's)
        generated = until(lambda: _metric_url(url, tokens) - tokens_before, timeout=10)
        assert len(stamps) <= generated < max_tokens / 2
        time.sleep(1.0)
        assert _metric_url(url, tokens) - tokens_before == generated  # and no more come
        ok = httpx.post(
            f"{url}/v1/chat/completions",
            json={**body, "stream": False, "max_tokens": 4},
            timeout=30,
        )
        assert ok.status_code == 200


def test_503_while_the_model_loads(demo_model_dir, tmp_path) -> None:
    """Until its model is loaded a worker answers 503 in OpenAI's error JSON with Retry-After.

    The load is held up for a real reason: the worker serves kubechat:demo from a cache where
    another process is building it (this test holds the build lock), as when several workers
    start at once. Polled from the moment the port opens, the 503s come before the first 200.
    """
    from kubechat.demo_model.build import build_lock

    cache = tmp_path / "cache"
    cache.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = {
        "model": "kubechat-demo",
        "messages": [{"role": "user", "content": SEED_QUESTION}],
        "temperature": 0,
    }
    env = {"KUBECHAT_CACHE": str(cache)}
    argv = worker_argv("kubechat:demo", port)
    with contextlib.ExitStack() as other_build:
        other_build.enter_context(build_lock(cache / "demo-model"))
        with running(argv, ready_url=f"{url}/health", log_path=tmp_path / "w.log", env=env):
            for _ in range(3):  # the model cannot be ready while the build lock is held
                r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
                assert r.status_code == 503, r.text
                error = r.json()["error"]
                assert error["code"] == "loading" and error["message"] and error["type"]
                assert int(r.headers["Retry-After"]) >= 1
                ready = httpx.get(f"{url}/health/ready")
                assert (ready.status_code, ready.json()) == (503, {"status": "loading"})
            # the other build is done: its model is in the cache and its lock let go
            shutil.copytree(demo_model_dir, cache / "demo-model")
            other_build.close()
            statuses = []
            deadline = time.monotonic() + 120
            while not statuses or statuses[-1] != 200:
                assert time.monotonic() < deadline, statuses[-5:]
                r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
                statuses.append(r.status_code)
                if r.status_code == 503:
                    assert r.json()["error"]["code"] == "loading"
                    time.sleep(0.05)
            assert set(statuses[:-1]) <= {503}
            assert "K2" in r.json()["choices"][0]["message"]["content"]


def test_remote_code_needs_the_flag(demo_model_dir, tmp_path) -> None:
    port = free_port()
    argv = [a for a in worker_argv(demo_model_dir, port) if a != "--trust-remote-code"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "trust-remote-code" in (proc.stdout + proc.stderr)


def _metric_url(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and name.endswith("}")):
            return float(line.rsplit(" ", 1)[1])
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _metric(worker: Worker, name: str) -> float:
    return _metric_url(worker.url, name)


def _generation_config(model_dir) -> dict:
    return json.loads((model_dir / "generation_config.json").read_text())


def _context_length(worker: Worker) -> int:
    r = httpx.post(
        f"{worker.url}/v1/completions",
        json={"model": worker.model, "prompt": "x", "max_tokens": 10**6},
    )
    return int(r.json()["error"]["message"].split("context window is ")[1].split(" ")[0])


def test_ready_implies_a_published_ready_lease(demo_model_dir, tmp_path) -> None:
    """The moment /health/ready says 200, the worker's lease already says ready: whoever waits
    for readiness (kubechat up, a kubelet) can route to it at once."""
    from kubechat.discovery.local_store import LocalLeaseStore

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    leases = tmp_path / "leases"
    argv = worker_argv(
        demo_model_dir,
        port,
        "--lease-store",
        f"local:{leases}",
        "--worker-name",
        "w0",
        "--lease-renew-interval",
        "30",
        "--lease-duration",
        "90",
    )
    with running(argv, ready_url=f"{url}/health", log_path=tmp_path / "w.log"):
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        records = LocalLeaseStore(leases).snapshot()
        assert [(r.name, r.ready, r.models) for r in records] == [("w0", True, ("kubechat-demo",))]
