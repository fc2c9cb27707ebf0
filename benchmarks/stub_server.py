"""A fast OpenAI-compatible stub server for benchmarks: no model, instant, deterministic.

It answers ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1, with the
standard library only, and replies what the pipeline's stages expect:

- an instantiate request (the user turn is ``Document:\\n{document}\\n\\nTemplate: {template}``
  or the JSON ``{"instruction_template", "document"}``): ``{"instruction", "answer"}`` where
  the instruction is the template with each ``<fi>`` tag replaced by a word of the
  document and the answer is one ``<excerpt>FIRST WORDS<...>LAST WORDS</excerpt>`` marker
  that expands to exactly one sentence of the document (chosen from a hash of the
  template); ``null`` when the document has no such sentence;
- a judge request (it mentions an instruction, an answer and a score): a score of 4 or
  5 (from a hash), as ``{"score": N}`` when the request constrains output to JSON or
  asks for it, otherwise as ``<feedback>…</feedback><score>N</score>``;
- anything else is a templatize request: ``{"template", "compatible_document_description"}``
  with one ``<fi>`` tag over the query's specific words.

Use it from Python::

    from stub_server import start_stub_server
    base_url, stop = start_stub_server()        # http://127.0.0.1:PORT/v1
    ...
    stop()

or ``with stub_server() as base_url: ...``, or from a shell::

    python benchmarks/stub_server.py --port 8011
    python benchmarks/stub_server.py --bench [--request instantiate]  # requests/s, 16 clients
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import re
import sys
import threading
import time
import zlib
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

MODEL_ID = "stub"
_TAG = re.compile(r"<fi>.*?</fi>", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W\d_]{4,}")
_SPECIFIC = re.compile(r"""\d|["“”]|^['‘(]|['’)]$""")  # numbers and quotes, wherever they stand
_CAPITAL = re.compile(r"[A-Z]")  # names, except the query's first word
_UNSAFE = re.compile(r'["\\<]')
PREFIX_WORDS = 4
SUFFIX_WORDS = 3


def _hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


# -- instantiate ------------------------------------------------------------------------


def _instantiate_request(user: str) -> tuple[str, str] | None:
    """``(document, template)`` of an instantiate user turn, or None."""
    if user.startswith("Document:\n"):
        document, found, template = user[len("Document:\n") :].rpartition("\n\nTemplate: ")
        if found:
            return document, template
    if user.startswith("{") and '"instruction_template"' in user:
        try:
            payload = json.loads(user)
        except ValueError:
            return None
        if isinstance(payload, dict) and isinstance(payload.get("document"), str):
            return payload["document"], str(payload.get("instruction_template", ""))
    return None


@lru_cache(maxsize=256)  # the requests of one document come together (6 templates each)
def _document_parts(document: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The document with whitespace collapsed, its sentences, and its longer words."""
    collapsed = " ".join(document.split())
    sentences = tuple(
        s for s in _SENTENCE_END.split(collapsed) if len(s.split()) >= PREFIX_WORDS + SUFFIX_WORDS and "<" not in s
    )
    words = tuple(dict.fromkeys(_WORD.findall(collapsed))) or ("thing",)
    return collapsed, sentences, words


def _marker(collapsed: str, sentence: str) -> str | None:
    """The excerpt marker for ``sentence`` if it expands to exactly that sentence:
    its prefix occurs once, and the first suffix after it ends the sentence."""
    words = sentence.split(" ")
    prefix, suffix = " ".join(words[:PREFIX_WORDS]), " ".join(words[-SUFFIX_WORDS:])
    start = collapsed.find(prefix)
    if start == -1 or collapsed.find(prefix, start + 1) != -1:
        return None
    end = collapsed.find(suffix, start + len(prefix))
    if end == -1 or collapsed[start : end + len(suffix)] != sentence:
        return None
    return f"<excerpt>{prefix}<...>{suffix}</excerpt>"


def instantiate_reply(document: str, template: str) -> str:
    collapsed, sentences, words = _document_parts(document)
    seed = _hash(template)
    for k in range(len(sentences)):
        marker = _marker(collapsed, sentences[(seed + k) % len(sentences)])
        if marker is not None:
            break
    else:
        return "null"  # nothing quotable: the template "does not fit"
    fill = iter(range(1_000_000))
    instruction = _TAG.sub(lambda _: words[(seed + next(fill)) % len(words)], template)
    return json.dumps({"instruction": instruction, "answer": marker}, ensure_ascii=False)


# -- judge and templatize --------------------------------------------------------------


def _is_judge(text: str) -> bool:
    lowered = text.lower()
    return "score" in lowered and "instruction" in lowered and ("answer" in lowered or "<output>" in lowered)


def judge_reply(user: str, wants_json: bool) -> str:
    score = 4 + _hash(user) % 2
    if wants_json:
        return json.dumps({"score": score})
    return f"<feedback>\nThe output addresses the instruction with text from its source.\n</feedback>\n<score>\n{score}\n</score>"


def templatize_reply(query: str) -> str:
    raw = query.split() or ["it"]
    # One tag over the run from the first to the last specific word (names, numbers,
    # quotes), so nothing specific stays outside it; over the last third when none.
    specific = [i for i, w in enumerate(raw) if _SPECIFIC.search(w) or (i and _CAPITAL.search(w))]
    # Without the characters the template pattern forbids outside a tag (", \, <).
    words = [_UNSAFE.sub("", word) for word in raw]
    first, last = (specific[0], specific[-1]) if specific else (len(words) - max(1, len(words) // 3), len(words) - 1)
    template = " ".join(words[:first] + ["<fi>the specific subject of the question</fi>"] + words[last + 1 :])
    description = "An informative web page or encyclopedia entry that covers this kind of subject and gives details to answer with."
    return json.dumps({"template": template, "compatible_document_description": description}, ensure_ascii=False)


# -- the protocol ----------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _schema_properties(body: dict[str, Any]) -> set[str]:
    schema: Any = body.get("guided_json")
    response_format = body.get("response_format")
    if schema is None and isinstance(response_format, dict):
        schema = response_format.get("schema") or (response_format.get("json_schema") or {}).get("schema")
    if schema is None and isinstance(body.get("structured_outputs"), dict):
        schema = body["structured_outputs"].get("json")
    if isinstance(schema, str):
        with contextlib.suppress(ValueError):
            schema = json.loads(schema)
    if not isinstance(schema, dict):
        return set()
    properties = set(schema.get("properties", {}))
    for option in schema.get("anyOf", ()):
        if isinstance(option, dict):
            properties |= set(option.get("properties", {}))
    return properties


def reply_content(body: dict[str, Any]) -> str:
    """What the stub answers to one chat-completions request body."""
    messages = body.get("messages") or []
    user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    system = next((_text_of(m.get("content")) for m in messages if m.get("role") == "system"), "")
    instantiate = _instantiate_request(user)
    if instantiate is not None:
        return instantiate_reply(*instantiate)
    properties = _schema_properties(body)
    wants_json = bool(properties) or body.get("response_format") is not None or body.get("guided_json") is not None
    if "score" in properties or (not properties and _is_judge(system + "\n" + user)):
        return judge_reply(user, wants_json or '{"score"' in system + user)
    return templatize_reply(user)


def completion(body: dict[str, Any]) -> dict[str, Any]:
    content = reply_content(body)
    prompt_chars = sum(len(_text_of(m.get("content"))) for m in body.get("messages") or [])
    return {
        "id": f"chatcmpl-stub-{_hash(content):08x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or MODEL_ID,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_chars // 4 + 1,
            "completion_tokens": len(content) // 4 + 1,
            "total_tokens": prompt_chars // 4 + len(content) // 4 + 2,
        },
    }


MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "fineinstructions-benchmarks"}]}
).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one thread per client connection, not per request

    def _send(self, status: int, payload: bytes) -> None:
        # Written in one piece, without send_response's logging and date formatting.
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + payload)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, MODELS)
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, b'{"error": {"message": "the body is not JSON"}}')
            return
        self._send(200, json.dumps(completion(body), ensure_ascii=False).encode("utf-8"))

    def log_message(self, format: str, *args: Any) -> None:  # quiet: thousands of requests/s
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def start_stub_server(port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve in a background thread; ``(base_url, stop)``. Port 0 picks a free port."""
    server = _Server(("127.0.0.1", port), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return f"http://127.0.0.1:{server.server_address[1]}/v1", stop


@contextlib.contextmanager
def stub_server(port: int = 0) -> Iterator[str]:
    """``with stub_server() as base_url:`` — the server runs inside the block."""
    base_url, stop = start_stub_server(port)
    try:
        yield base_url
    finally:
        stop()


# -- a lean load generator (so the client is not what is measured) ---------------------


def _serve_in_child(port: int, ready: Any) -> None:
    base_url, _ = start_stub_server(port)
    ready.put(base_url)
    threading.Event().wait()


async def _load(port: int, body: bytes, concurrency: int, seconds: float) -> int:
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            done += 1
        writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done


def sample_body(kind: str) -> dict[str, Any]:
    """A request of each kind, about the size the stages send (an instantiate request
    carries a ~2 KB document; the prompted few-shot turns are left out)."""
    if kind == "instantiate":
        document = " ".join(
            f"Sentence number {i} of the sample document says something about tides and the moon." for i in range(25)
        )
        content = f"Document:\n{document}\n\nTemplate: how do <fi>a natural phenomenon</fi> work"
        return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": {}}}}
    if kind == "judge":
        content = "Instruction:\nhow do tides work\n\nAnswer:\nThe moon pulls the water.\n\nGive a score."
        return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}]}
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": "how do tides work on the Moon"}]}


def bench(concurrency: int = 16, seconds: float = 5.0, kind: str = "templatize") -> float:
    """Requests/s of a stub server in another process, ``concurrency`` keep-alive clients
    each sending one ``kind`` request after another (a lean client, so that the server,
    not an HTTP client library, is what is measured)."""
    ready: Any = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(target=_serve_in_child, args=(0, ready), daemon=True)
    child.start()
    try:
        port = int(ready.get(timeout=30).rsplit(":", 1)[1].split("/")[0])
        body = json.dumps(sample_body(kind)).encode()
        done = asyncio.run(_load(port, body, concurrency, seconds))
        return done / seconds
    finally:
        child.terminate()
        child.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8011, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--bench", action="store_true", help="measure requests/s and exit")
    parser.add_argument("--concurrency", type=int, default=16, help="clients for --bench")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of --bench")
    parser.add_argument(
        "--request", choices=("templatize", "instantiate", "judge"), default="templatize", help="what --bench sends"
    )
    args = parser.parse_args(argv)
    if args.bench:
        rate = bench(args.concurrency, args.seconds, args.request)
        print(f"{rate:,.0f} {args.request} requests/s with {args.concurrency} concurrent keep-alive clients")
        return
    server = _Server(("127.0.0.1", args.port), _Handler)
    print(f"stub OpenAI-compatible server on http://127.0.0.1:{server.server_address[1]}/v1", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
