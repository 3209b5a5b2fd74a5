"""zoo serve end to end on the loopback interface, over plain HTTP: OpenAI's routes answer with
what zoo.generate gives for the same seed, streamed or whole; requests sent at the same time come
back as each would alone (no shared KV state); bad requests get a 4xx and a message."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import uvicorn

import zoo
from zoo.models import Decoder, ModelConfig
from zoo.serving import build_app, chat_prompt

SMALL = ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=64, sparsity="topk", k_ratio=0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    model = zoo.to_inference(Decoder(SMALL).eval())
    port = free_port()
    config = uvicorn.Config(build_app(model, "small"), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.started
    yield model, f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def post(url: str, body, raw: bool = False):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            return response.status, text if raw else json.loads(text)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode())


def events(text: str) -> list:
    lines = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_models_lists_the_served_name(server):
    _, base = server
    with urllib.request.urlopen(base + "/v1/models", timeout=30) as response:
        assert [m["id"] for m in json.loads(response.read())["data"]] == ["small"]


def test_completion_whole_and_streamed_equal_generate(server):
    model, base = server
    expected = zoo.generate(model, "ROMEO:", 24, seed=3)
    status, body = post(base + "/v1/completions", {"prompt": "ROMEO:", "max_tokens": 24, "seed": 3})
    assert status == 200 and body["choices"][0]["text"] == expected
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 24, "total_tokens": 30}
    assert body["choices"][0]["finish_reason"] == "length"
    status, text = post(base + "/v1/completions", {"prompt": "ROMEO:", "max_tokens": 24, "seed": 3, "stream": True}, raw=True)
    chunks = events(text)
    assert status == 200 and len(chunks) > 2
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["usage"]["completion_tokens"] == 24


def test_stop_and_chat(server):
    model, base = server
    full = zoo.generate(model, "x", 30, temperature=0)
    stop = full[6:9]
    status, body = post(base + "/v1/completions", {"prompt": "x", "max_tokens": 30, "temperature": 0, "stop": stop})
    assert status == 200 and body["choices"][0] == {"index": 0, "text": full[: full.index(stop)], "logprobs": None, "finish_reason": "stop"}
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    prompt = chat_prompt(messages)
    assert prompt == "system: Be brief.\nuser: Hello\nassistant:"
    expected = zoo.generate(model, prompt, 20, temperature=0, stop="\nuser:")
    status, body = post(base + "/v1/chat/completions", {"messages": messages, "max_tokens": 20, "temperature": 0})
    assert status == 200 and body["choices"][0]["message"] == {"role": "assistant", "content": expected}
    status, text = post(base + "/v1/chat/completions", {"messages": messages, "max_tokens": 20, "temperature": 0, "stream": True}, raw=True)
    assert "".join(c["choices"][0]["delta"]["content"] for c in events(text)) == expected


def test_concurrent_streams_come_back_as_each_alone(server):
    model, base = server
    asks = [("ROMEO:", 11), ("JULIET:", 12), ("To be", 13), ("ROMEO:", 14)]
    expected = [zoo.generate(model, prompt, 32, seed=seed) for prompt, seed in asks]

    def ask(item):
        prompt, seed = item
        _, text = post(base + "/v1/completions", {"prompt": prompt, "max_tokens": 32, "seed": seed, "stream": True}, raw=True)
        return "".join(c["choices"][0]["text"] for c in events(text))

    with ThreadPoolExecutor(len(asks)) as pool:
        assert list(pool.map(ask, asks)) == expected


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "the request body is not valid JSON"),
        ({"max_tokens": 4}, 400, "prompt: Field required"),
        ({"prompt": "a", "max_tokens": 0}, 400, "max_tokens: Input should be greater than or equal to 1"),
        ({"prompt": "a", "temperature": -1}, 400, "temperature: Input should be greater than or equal to 0"),
        ({"prompt": "", "max_tokens": 4}, 400, "prompt is empty"),
        ({"prompt": ["a", "b"]}, 400, "one prompt a request, got 2"),
        ({"prompt": "a", "stop": [""]}, 400, "each stop string must be non-empty"),
        ({"prompt": "a", "model": "gpt-4"}, 404, "model 'gpt-4' is not served here"),
    ],
)
def test_bad_requests_get_a_4xx_and_a_message(server, body, status, message):
    _, base = server
    got, answer = post(base + "/v1/completions", body)
    assert got == status and message in answer["error"]["message"]
    assert post(base + "/v1/completions", {"prompt": "a", "max_tokens": 2})[0] == 200  # the server is still up


def test_zoo_serve_command_answers_a_streamed_completion():
    port = free_port()
    command = [sys.executable, "-m", "zoo.cli", "serve", "dense-tiny", "--port", str(port), "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        body = {"prompt": "ROMEO:", "max_tokens": 16, "temperature": 0, "stream": True}
        status, text = post(f"http://127.0.0.1:{port}/v1/completions", body, raw=True)
        engine = zoo.from_pretrained("dense-tiny", inference=True)
        assert status == 200 and "".join(c["choices"][0]["text"] for c in events(text)) == zoo.generate(engine, "ROMEO:", 16, temperature=0)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_failing_model_is_a_500_with_a_message_not_a_crash(monkeypatch):
    """A model error (not the request's) comes back as OpenAI's error object: status 500 for a whole
    answer, an error event for a stream; the server keeps serving."""
    import zoo.serving

    def broken(*args, **kwargs):
        raise RuntimeError("out of cheese")
        yield ""  # a generator, as stream_text is

    torch.manual_seed(0)
    model = zoo.to_inference(Decoder(SMALL).eval())
    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(build_app(model, "small"), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.05)
    try:
        base = f"http://127.0.0.1:{port}"
        monkeypatch.setattr(zoo.serving, "stream_text", broken)
        status, body = post(base + "/v1/completions", {"prompt": "a", "max_tokens": 4})
        assert status == 500 and body["error"] == {
            "message": "the model failed on this request: RuntimeError: out of cheese",
            "type": "server_error",
        }
        status, text = post(base + "/v1/completions", {"prompt": "a", "max_tokens": 4, "stream": True}, raw=True)
        assert status == 200 and '"error"' in text and "out of cheese" in text
        monkeypatch.undo()
        assert post(base + "/v1/completions", {"prompt": "a", "max_tokens": 2})[0] == 200
    finally:
        instance.should_exit = True
        thread.join(timeout=10)
