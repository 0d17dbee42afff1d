"""The program that runs inside a grading sandbox: one per submission, one child per exercise.

Started by :mod:`cs_utils.instructor.sandbox` as ``python -I sandbox_runner.py BASE SUBMISSION JOBS
SCRATCH MEMORY_BYTES MAX_PROCESSES``. ``BASE`` holds the student release of ``cs_utils`` (no
solutions, no golden files, no grader), ``SUBMISSION`` the submission's ``.py`` files, ``JOBS`` one
folder of input files per exercise (``case_0.npz`` ...), ``SCRATCH`` the only writable folder.

The parent (the *zygote*) imports torch, ``cs_utils`` and the pretrained model once, prints
``ready <path of cs_utils>`` and then reads exercise names from stdin. For each name it forks a
child (printing ``started <name> <pid>``) that: starts its own session, sends its output to
``SCRATCH/<name>/log.txt``, sets hard limits (address space, file size, processes, soft = hard),
imports the submission's module in
place of the release's, calls the function on every case and writes ``SCRATCH/<name>/case_<i>.npz``
(plain arrays: ``status``, ``message`` as UTF-8 bytes, ``seconds`` and ``out/<key>``). When the
child ends, the zygote kills whatever it left behind and prints ``done <name> <exit status>``.

Nothing here is trusted by the grader: it validates every file it reads back.
"""

from __future__ import annotations

import copy
import ctypes
import os
import signal
import sys
import time
import traceback

__all__: list[str] = []  # a program, not a library

OK, NOT_IMPLEMENTED, ERROR, FAIL, MEMORY = 0, 1, 2, 3, 4
FORK_BOMB_CHECK_SECONDS = 0.01


def _drop_editable_finders() -> None:
    """An editable install of the grader's cs_utils adds a finder for its tree: remove it."""
    sys.meta_path[:] = [
        f
        for f in sys.meta_path
        if "editable" not in (getattr(f, "__module__", "") or "").lower()
        and "editable" not in getattr(f, "__name__", "").lower()
    ]


def _write_case(path: str, status: int, message: str = "", seconds: float = 0.0, outputs=None) -> None:
    import numpy as np

    arrays = {
        "status": np.array(status),
        "message": np.frombuffer(message.encode("utf-8", "replace")[:4000], dtype=np.uint8),
        "seconds": np.array(float(seconds)),
    }
    for key, value in (outputs or {}).items():
        arrays[f"out/{key}"] = value
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _set_limits(memory_bytes: int, max_processes: int) -> None:
    import resource

    def hard(kind, value):
        try:
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError):
            soft, old_hard = resource.getrlimit(kind)
            resource.setrlimit(kind, (min(value, old_hard), min(value, old_hard)))

    size = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                size = int(line.split()[1]) * 1024
    hard(resource.RLIMIT_AS, size + memory_bytes)
    hard(resource.RLIMIT_FSIZE, 64 * 2**20)
    hard(resource.RLIMIT_CORE, 0)
    hard(resource.RLIMIT_NPROC, max_processes)


def _load_inputs(path: str) -> dict:
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _import_submission(module: str, submission: str):
    """The submission's ``<module>.py`` as ``cs_utils.<module>``, replacing the release's."""
    import importlib.util

    import cs_utils

    path = os.path.join(submission, f"{module}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cs_utils/{module}.py is missing from the submission")
    spec = importlib.util.spec_from_file_location(f"cs_utils.{module}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"cs_utils.{module}"] = mod
    setattr(cs_utils, module, mod)
    spec.loader.exec_module(mod)
    return mod


def _import_message(exc: BaseException, exercise) -> str:
    if isinstance(exc, FileNotFoundError) and "missing from the submission" in str(exc):
        return str(exc)
    if isinstance(exc, SyntaxError):
        return (
            f"cannot import {exercise.path}: SyntaxError in {os.path.basename(exc.filename or '?')} line "
            f"{exc.lineno}: {exc.msg}"
        )
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "importlib" not in f.filename and not f.filename.startswith("<frozen")
    ]
    where = f" ({os.path.basename(frames[-1].filename)} line {frames[-1].lineno})" if frames else ""
    return f"cannot import {exercise.path}: {type(exc).__name__}: {exc}{where}"


class _Context:
    """The pretrained model the zygote loaded once, in each dtype. No copy is needed: the child is a
    copy-on-write fork, and what a submission changes in the model dies with its child (or at worst
    spoils its own later cases)."""

    def __init__(self, templates: dict):
        self.templates, self.models = templates, []

    def model(self, dtype=None):
        import torch

        from cs_utils.course.grading import _hooks_and_modes

        dtype = dtype or torch.float64
        if dtype not in self.templates:
            self.templates[dtype] = self.templates[torch.float32].to(dtype)
        model = self.templates[dtype]
        self.models.append((model, _hooks_and_modes(model)))
        return model


def _run_case(exercise, fn, inputs: dict, template):
    """``(status, message, outputs)`` of one call of ``fn`` on ``inputs``."""
    import numpy as np
    import torch

    from cs_utils.course.grading import _error_message, _hooks_and_modes, _not_implemented_message

    ctx = _Context(template)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in inputs.items()}
    originals = {k: v.clone() for k, v in tensors.items()}
    try:
        raw = exercise.run(fn, tensors, ctx)
    except NotImplementedError as exc:
        return NOT_IMPLEMENTED, _not_implemented_message(exercise, exc), {}
    except MemoryError:
        return MEMORY, "MemoryError", {}
    except Exception as exc:  # noqa: BLE001 - the submission's exception is the result
        message = _error_message(exc)
        return (
            (MEMORY if "can't allocate memory" in message or "DefaultCPUAllocator" in message else ERROR),
            message,
            {},
        )
    outputs = {}
    for key, value in raw.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = value.double() if value.is_floating_point() or value.dtype == torch.bool else value.long()
            outputs[key] = value.numpy()
        elif isinstance(value, (bool, int, float, np.integer, np.floating)):
            outputs[key] = np.asarray(value, dtype=np.float64)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            outputs[key] = value
        else:
            return (
                FAIL,
                f"the result ({key}) is a {type(value).__name__}, expected a tensor; return the "
                "result (did you forget `return`?)",
                {},
            )
    for key, tensor in tensors.items():
        if tensor.shape != originals[key].shape or not torch.equal(tensor, originals[key]):
            return (
                FAIL,
                f"the input {key!r} was changed in place; work on a copy (x.clone()) or out of place",
                {},
            )
    for model, before in ctx.models:
        hooks, modes, flags = _hooks_and_modes(model)
        if hooks != before[0]:
            return (
                FAIL,
                "hooks were left on the model; remove them (use a context manager or try/finally)",
                {},
            )
        if modes != before[1]:
            return FAIL, "the model's train/eval mode changed; use cs_utils.hooks.evaluating(model)", {}
        if flags != before[2]:
            return (
                FAIL,
                "requires_grad of the model's parameters changed; differentiate with respect to "
                "the image only (torch.autograd.grad(loss, [x]))",
                {},
            )
    return OK, "", outputs


def _child(
    name: str, submission: str, jobs: str, scratch: str, memory_bytes: int, max_processes: int, template
) -> None:
    os.setsid()
    folder = os.path.join(scratch, name)
    os.makedirs(folder, exist_ok=True)
    os.chdir(folder)
    log = os.open(os.path.join(folder, "log.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:  # the memory limit's OOM killer takes this child first, never the runner
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    from cs_utils.course.grading import get_exercise

    exercise = get_exercise(name)
    cases = sorted(f for f in os.listdir(os.path.join(jobs, name)) if f.endswith(".npz"))
    inputs = [_load_inputs(os.path.join(jobs, name, f)) for f in cases]
    outs = [os.path.join(folder, f) for f in cases]
    _set_limits(memory_bytes, max_processes)
    try:
        module = _import_submission(exercise.module, submission)
        fn = getattr(module, exercise.function, None)
        if not callable(fn):
            raise AttributeError(f"{exercise.path} has no function {exercise.function}")
    except BaseException as exc:  # noqa: BLE001 - a broken module is the result of every case
        message = str(exc) if isinstance(exc, AttributeError) else _import_message(exc, exercise)
        status = MEMORY if isinstance(exc, MemoryError) else ERROR
        for out in outs:
            _write_case(out, status, message)
        return
    import torch

    for case_inputs, out in zip(inputs, outs):
        start = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[]):
                status, message, outputs = _run_case(exercise, fn, case_inputs, template)
        except MemoryError:
            status, message, outputs = MEMORY, "MemoryError", {}
        except BaseException as exc:  # noqa: BLE001 - e.g. SystemExit raised by the submission
            status, message, outputs = ERROR, f"{type(exc).__name__}: {exc}", {}
        try:
            _write_case(out, status, message, time.perf_counter() - start, outputs)
        except OSError:  # e.g. larger than the file size limit
            _write_case(out, ERROR, "the result is larger than the 64 MB a result file may take")


def _processes() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _kill_leftovers(own_namespace: bool, child: int) -> None:
    """Kill every process the child left: all but this one in the sandbox's own PID namespace,
    else the child's process group and the orphans this subreaper adopted."""
    if own_namespace:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        try:
            os.killpg(child, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        me = str(os.getpid())
        for _ in range(50):
            adopted = []
            for pid in _processes():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if fields[1] == me:
                    adopted.append(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for pid in adopted:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            if not adopted:
                break
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break


PRIVATE_PLACES = ("/tmp", "/dev/shm")


def _private_entries() -> set[str]:
    found = set()
    for folder in PRIVATE_PLACES:
        try:
            found.update(os.path.join(folder, name) for name in os.listdir(folder))
        except OSError:
            continue
    return found


def _clear_private(kept: set[str]) -> None:
    """In the sandbox's own namespaces: remove what the last child left in its private /tmp and
    /dev/shm and its System V IPC (all in memory: left there, they would count against the next
    exercise)."""
    import subprocess

    extra = sorted(_private_entries() - kept)
    if extra:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", *extra], capture_output=True)
    subprocess.run(["ipcrm", "--all"], capture_output=True)  # System V objects outlive their process


def _wait_child(pid: int, own_namespace: bool, max_processes: int) -> str:
    """Wait for the child; in the sandbox's own PID namespace, stop a fork bomb early."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFEXITED(status):
                return str(os.WEXITSTATUS(status))
            return f"signal{os.WTERMSIG(status)}"
        if own_namespace and len(_processes()) >= max_processes - 2:  # RLIMIT_NPROC stops it at max
            os.kill(-1, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "forkbomb"
        time.sleep(FORK_BOMB_CHECK_SECONDS)


def main(argv: list[str]) -> int:
    base, submission, jobs, scratch, memory_bytes, max_processes = argv
    memory_bytes, max_processes = int(memory_bytes), int(max_processes)
    _drop_editable_finders()
    sys.path[:0] = [base]
    import numpy  # noqa: F401
    import torch

    torch.set_num_threads(1)
    import cs_utils
    from cs_utils.course import grading  # noqa: F401 - the exercises' recipes
    from cs_utils.models import load_model

    template = load_model("efficientnet_lite0")
    template = {torch.float32: template, torch.float64: copy.deepcopy(template).to(torch.float64)}
    import torch.fx.experimental.symbolic_shapes  # noqa: F401 - autograd imports it lazily: once, here
    for dtype, model in template.items():  # warm up once here, not in every child
        x = torch.full((1, 3, 48, 48), 0.5, dtype=dtype, requires_grad=True)
        torch.autograd.grad(model(x)[:, 0].sum(), [x])
    own_namespace = os.getpid() <= 3  # pid 1 is bubblewrap's init in the sandbox's PID namespace
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: children cannot open this process's /proc files
    if not own_namespace:
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the children come back here
    kept = _private_entries()
    out = sys.stdout
    out.write(f"ready {os.path.realpath(cs_utils.__file__)}\n")
    out.flush()
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(name, submission, jobs, scratch, memory_bytes, max_processes, template)
            except BaseException:  # noqa: BLE001
                code = 70
            finally:
                os._exit(code)
        out.write(f"started {name} {pid}\n")   # the grader may kill this child's session on timeout
        out.flush()
        how = _wait_child(pid, own_namespace, max_processes)
        _kill_leftovers(own_namespace, pid)
        if own_namespace:
            _clear_private(kept)
        out.write(f"done {name} {how}\n")
        out.flush()
    out.flush()
    os._exit(0)   # end of input: leave at once (no interpreter teardown)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
