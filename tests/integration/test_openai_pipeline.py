"""The pipeline with every LLM stage (templatize, instantiate, judge) on an
OpenAI-compatible server: a real llama.cpp server on 127.0.0.1 serving the embedded
SmolLM2-135M, on a few real queries and documents from ../shared/data."""

import json
from pathlib import Path

import pytest

from fineinstructions.config import load_config
from fineinstructions.execution.pipeline import run_pipeline
from support.llama_server import MODEL_ALIAS, LlamaServer

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
N_CTX = 2048


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server():
    running = LlamaServer(n_ctx=N_CTX).start()
    yield running
    running.stop()


def test_templatize_instantiate_and_judge_all_through_a_server(server, tmp_path):
    queries = [q for q in rows("queries.jsonl") if q["source"] == "natural-questions"][::100][:3]
    short = next(d for d in rows("documents.jsonl") if d["source"] == "c4" and len(d["text"]) < 900)
    # Longer than the context window: instantiate must count its tokens to cut it to fit.
    long = next(d for d in rows("documents.jsonl") if d["source"] == "c4" and 9000 < len(d["text"]) < 20000)
    # Small and quick: every document matches one template (one vector, any score), and
    # answers are short; the server decodes one request at a time.
    settings = ["match.threshold=-1", "embed.num_chunks=0", "instantiate.max_tokens=128"]
    for stage in ("templatize", "instantiate", "judge"):
        settings += [
            f"{stage}.llm.backend=openai", f"{stage}.llm.model={MODEL_ALIAS}", f"{stage}.llm.dialect=llama_cpp",
            f"{stage}.llm.base_url={server.base_url}", f"{stage}.llm.n_ctx={N_CTX}",
        ]
    config = load_config("embedded", overrides=settings)
    messages: list[str] = []
    stats = run_pipeline(
        [write_jsonl(tmp_path / "queries.jsonl", queries)],
        [write_jsonl(tmp_path / "documents.jsonl", [short, long])],
        tmp_path / "run", config, show_progress=False, report=False, log=messages.append,
    )
    stages = stats["stages"]
    assert stages["templatize"]["out"] > 0, stages["templatize"]
    assert stages["templatize"]["constraint"] == "query"  # the llama.cpp server takes GBNF grammars
    instantiate = stages["instantiate"]
    assert instantiate["in"] > 0 and instantiate["model_calls"] > 0, instantiate
    assert instantiate["constraint"] == "document"
    # The long document was cut to fit, by the server's own token count: nothing overflowed.
    assert instantiate["truncated_documents"] >= 1, instantiate
    assert "context_overflow" not in instantiate["failed"] and "backend_error" not in instantiate["failed"]
    judge = stages["judge"]
    assert judge["in"] == instantiate["out"]
    assert "backend_error" not in judge.get("failed", {})
    assert sum(judge["score_histogram"].values()) + judge["failed"].get("unparseable_judgement", 0) + judge["skipped"].get("irrelevant_answer", 0) == judge["in"]
