"""Does this llama.cpp build run on this CPU? Asked once, in a child process.

A llama.cpp build compiled for the build machine's own instruction sets (pip's default,
``GGML_NATIVE``) can crash on the first decode instead of failing cleanly: on
virtualised Xeons that report AMX, the AMX kernels segfault. A crash would take the
whole process down with no word of why. So before the llama.cpp backend loads a model
for work, a child process loads the same model and decodes one token. A child killed by
a signal means this build cannot run here: :class:`LlamaCppBuildError` names the cause
and the command that installs a portable build.

The verdict is kept per (build, CPU, model file) in the user's cache folder
(``$XDG_CACHE_HOME/fineinstructions/llama_cpp_probe.json``), so each pair is tried once
and later workers only read a small JSON file. Reinstalling llama-cpp-python changes the
build's files and so asks again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fineinstructions.errors import UserError

PORTABLE_CMAKE_ARGS = {
    "x86_64": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON",
    "AMD64": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON",
}
DEFAULT_CMAKE_ARGS = "-DGGML_NATIVE=OFF"  # aarch64 and the rest: the architecture's baseline
TIMEOUT_S = 600.0  # loading a large model from a slow disk


class LlamaCppBuildError(UserError):
    """The installed llama.cpp build crashes on this CPU."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str  # "decoded one token", or how the child died
    system_info: str  # the build's own feature line (llama_print_system_info)
    cached: bool = False
    judged: bool = True  # False: the child neither decoded nor crashed (an error, a timeout)


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fineinstructions" / "llama_cpp_probe.json"


def portable_install_command() -> str:
    """The command that replaces the installed llama-cpp-python with a portable build."""
    try:
        from importlib.metadata import version

        pin = f"llama-cpp-python=={version('llama-cpp-python')}"
    except Exception:  # not installed at all
        pin = "llama-cpp-python"
    flags = PORTABLE_CMAKE_ARGS.get(platform.machine(), DEFAULT_CMAKE_ARGS)
    return (
        f'CMAKE_ARGS="{flags}" {sys.executable} -m pip install --force-reinstall --no-cache-dir '
        f"--no-deps --no-binary llama-cpp-python '{pin}'"
    )


def build_signature() -> str:
    """The installed llama.cpp build: its version and the size and time of its libraries."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return "absent"
    folder = Path(spec.origin).parent
    parts = []
    for path in sorted(folder.rglob("*")):
        if path.suffix in (".so", ".dylib", ".dll") or ".so." in path.name:
            stat = path.stat()
            parts.append(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join([str(folder), *parts]).encode()).hexdigest()[:16]


def cpu_signature() -> str:
    """This CPU as the kernel describes it (model and feature flags), hashed."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU implementer", "CPU part"):
                    text += line
                if not line.strip():  # the first processor is enough
                    break
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key(model_path: Path, n_threads: int) -> str:
    stat = model_path.stat()
    return f"{build_signature()}|{cpu_signature()}|{model_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}|{n_threads}"


def _read_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, verdict: Verdict) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache()
        data[key] = {"ok": verdict.ok, "detail": verdict.detail, "system_info": verdict.system_info}
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            json.dump(data, handle, indent=1)
        os.replace(handle.name, path)
    except OSError:
        pass  # an unwritable cache costs one probe per process, nothing else


def _child_command(model_path: Path, n_threads: int) -> list[str]:
    return [sys.executable, "-m", "fineinstructions.models.llama_cpp_probe", str(model_path), str(n_threads)]


def probe(model_path: str | Path, n_threads: int = 1, *, use_cache: bool = True) -> Verdict:
    """Load ``model_path`` with the installed llama.cpp in a child process and decode one
    token. ``ok`` is False only when the child was killed by a signal (a crash of the
    build); a child that fails with an ordinary error (a bad model file) says nothing
    about the build, so it counts as ok and the caller meets that error itself."""
    model_path = Path(model_path)
    key = _key(model_path, n_threads)
    if use_cache:
        known = _read_cache().get(key)
        if known is not None:
            return Verdict(bool(known["ok"]), str(known["detail"]), str(known.get("system_info", "")), cached=True)
    try:
        child = subprocess.run(
            _child_command(model_path, n_threads), capture_output=True, text=True, timeout=TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Verdict(True, f"no answer within {TIMEOUT_S:.0f} s (not judged)", "", judged=False)
    lines = child.stdout.splitlines()
    system_info = next((line[len("system_info: "):] for line in lines if line.startswith("system_info: ")), "")
    if child.returncode < 0:
        name = _signal_name(-child.returncode)
        verdict = Verdict(False, f"the test decode was killed by {name}", system_info)
    elif child.returncode == 0:
        verdict = Verdict(True, "decoded one token", system_info)
    else:
        return Verdict(True, "the test decode failed with an error (not judged): " + _last_line(child.stderr), system_info,
                       judged=False)
    _write_cache(key, verdict)
    return verdict


def ensure_runs_here(model_path: str | Path, n_threads: int = 1) -> Verdict:
    """:func:`probe`, raising :class:`LlamaCppBuildError` when the build crashes here."""
    verdict = probe(model_path, n_threads)
    if not verdict.ok:
        raise LlamaCppBuildError(crash_message(verdict))
    return verdict


def crash_message(verdict: Verdict) -> str:
    features = f"\n  the build's CPU features: {verdict.system_info}" if verdict.system_info else ""
    return (
        f"llama.cpp crashes on this CPU: {verdict.detail} (a one-token decode in a child process).\n"
        "  The installed llama-cpp-python was compiled for instruction sets this machine does not run\n"
        "  correctly (a native build on a virtualised CPU that reports AMX is the known case)."
        f"{features}\n"
        f"  fix: install a portable build:\n    {portable_install_command()}\n"
        "  (in a checkout of this project, `make install` builds it)"
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _child(model_path: str, n_threads: int) -> int:
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    print("system_info: " + (info.decode() if isinstance(info, bytes) else str(info)).strip(), flush=True)
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=64, n_batch=8, n_threads=n_threads,
                          n_threads_batch=n_threads, verbose=False)
    tokens = llm.tokenize(b"Hello")
    llm.eval(tokens)  # where a broken build dies: the first llama_decode
    print("decoded", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1], int(sys.argv[2])))
