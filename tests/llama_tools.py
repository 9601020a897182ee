"""llama.cpp's own tools (llama-quantize, llama-imatrix, llama-perplexity, ...) as test peers.

They are built with cmake from the llama.cpp that `make install` unpacked into `.venv/src` (the same
source the runtime and gguf-py come from), once per llama.cpp version, into
`~/.cache/modelport-tools/llama-build-<version>`. A file lock makes concurrent test processes wait
for one build instead of racing in the same folder. Tests that use them belong to the `slow` group.
"""
from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMAKE_ARGS = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
              "-DGGML_BMI2=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
              "-DLLAMA_BUILD_SERVER=OFF"]


def llama_cpp_source() -> Path:
    found = sorted((ROOT / ".venv" / "src").glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not found:
        raise FileNotFoundError("no llama.cpp source in .venv/src (make install puts the llama-cpp-python sdist there)")
    return found[-1]


def build_dir() -> Path:
    version = llama_cpp_source().parents[1].name.removeprefix("llama_cpp_python-")
    return Path.home() / ".cache" / "modelport-tools" / f"llama-build-{version}"


def llama_tool(name: str) -> Path:
    """The path of llama.cpp's `name` tool (e.g. "llama-quantize"), built on first use."""
    build = build_dir()
    tool = build / "bin" / name
    if tool.exists():
        return tool
    build.mkdir(parents=True, exist_ok=True)
    with open(build.parent / f"{build.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tool.exists():
            if not (build / "CMakeCache.txt").exists():
                subprocess.run(["cmake", "-S", str(llama_cpp_source()), "-B", str(build), *CMAKE_ARGS],
                               check=True, capture_output=True)
            subprocess.run(["cmake", "--build", str(build), "--target", name, "-j", "2"], check=True, capture_output=True)
    return tool
