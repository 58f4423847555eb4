"""The machine a number was measured on: one owner of the description every results file writes.

Float kernels differ between CPUs (a rerun elsewhere trains another model) and speed depends on the
cores and the GPU, so every results file names them: :func:`machine_facts` gathers them,
:func:`machine_text` writes the one-line form the bench files use.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["KERNEL_SETS", "machine_facts", "machine_line", "machine_text", "use_kernels"]

KERNEL_SETS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
"""CPU kernel sets a run can be made with instead of the machine's own (the runner's ``--kernels``): the
environment that makes PyTorch and oneDNN dispatch to them, as a machine with only those would."""


def machine_facts(gpu: bool = False) -> dict[str, Any]:
    """``{"arch", "cpu", "cores", "torch", "torch_release", "threads", "kernels"}`` (and ``"gpu"``, ``None`` without
    one, when asked): the CPU model from ``/proc/cpuinfo`` where there is one; torch's ``__version__`` (with its
    build tag, e.g. ``+cu130``) and its package release (without it), its thread count, and the CPU kernels it
    dispatches to (``AVX512``, ``AVX2`` under ``ATEN_CPU_CAPABILITY=avx2``, ...)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    facts: dict[str, Any] = {"arch": platform.machine(), "cpu": cpu, "cores": os.cpu_count(), "torch": "not installed",
                             "torch_release": "not installed", "threads": None, "kernels": None}
    try:
        from importlib.metadata import version

        facts["torch_release"] = version("torch")
        import torch
    except Exception:  # noqa: BLE001 - a report without torch installed still names the machine
        return facts | ({"gpu": None} if gpu else {})
    facts.update(torch=torch.__version__, threads=torch.get_num_threads(), kernels=torch.backends.cpu.get_cpu_capability())
    if gpu:
        facts["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return facts


def machine_text(gpu: bool = True) -> str:
    """``x86_64, 2 CPU cores, torch 2.x[, <GPU name> | no GPU]``: the bench files' ``machine`` line."""
    f = machine_facts(gpu=gpu)
    return f"{f['arch']}, {f['cores']} CPU cores, torch {f['torch']}" + (f", {f['gpu'] or 'no GPU'}" if gpu else "")


def machine_line() -> str:
    """``<CPU model> (<arch>), <n> cores, torch <version>, <n> thread(s), <kernels> kernels``: what a training or test
    stage ran on (the CPU, its kernels and the thread count all change the float arithmetic, so a number's machine
    is named with them)."""
    f = machine_facts()
    threads = f"{f['threads']} thread{'' if f['threads'] == 1 else 's'}"
    return f"{f['cpu']} ({f['arch']}), {f['cores']} cores, torch {f['torch']}, {threads}, {f['kernels']} kernels"


def use_kernels(name: str) -> None:
    """Make this process, and the processes it starts, compute with the kernel set ``name`` (:data:`KERNEL_SETS`).

    torch chooses its kernels at its first operation, so this must come before any. A
    :class:`~cream_pl.core.errors.UserValueError` (one line, the environment left as it was) where torch here runs
    others: this CPU lacks them, or an earlier operation in this process chose them.
    """
    from cream_pl.core.errors import UserValueError

    if name not in KERNEL_SETS:
        raise UserValueError(f"--kernels: unknown kernel set {name!r}; known: {sorted(KERNEL_SETS)}")
    before = {k: os.environ.get(k) for k in KERNEL_SETS[name]}
    os.environ.update(KERNEL_SETS[name])
    import torch

    got = torch.backends.cpu.get_cpu_capability()
    if got.lower() != name:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        raise UserValueError(f"--kernels {name}: torch here runs {got} kernels: this CPU has no {name.upper()}, or "
                             "an earlier torch operation in this process chose them (the runner's command line sets "
                             "them before any)")
