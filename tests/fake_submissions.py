"""Fake submissions for the autograder's tests: correct, untouched release, and attacks.

Each attack replaces one exercise function of a copy of the solution (a later ``def`` wins), so
the other exercises of the same submission are graded normally. ``MARKER`` (a unique text per test
run) lets a test look for what an attack left behind: files, processes.
"""

import shutil
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cs_utils"


def solution_copy(folder: Path) -> Path:
    """A student's ``cs_utils`` with every exercise solved (the solution's top-level modules)."""
    package = Path(folder) / "cs_utils"
    package.mkdir(parents=True)
    for path in PACKAGE.glob("*.py"):
        shutil.copyfile(path, package / path.name)
    return package


def zip_folder(package: Path, out: Path) -> Path:
    """``out`` (.zip) holding ``cs_utils/<module>.py``, as ``make submit`` writes it."""
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(package.glob("*.py")):
            zf.write(path, f"cs_utils/{path.name}")
    return out


def replace(package: Path, module: str, code: str) -> None:
    path = package / f"{module}.py"
    path.write_text(path.read_text() + "\n\n" + code.strip() + "\n")


def stored_style_loss() -> str:
    """style_loss returning the stored public answers, whatever its inputs."""
    with np.load(ROOT / "data" / "checks" / "style_loss.npz") as npz:
        loss, loss_2 = float(npz["outputs/loss"]), float(npz["outputs/loss_weight_2"])
    return f"""
def style_loss(features, target_grams, weights=1.0):
    import torch
    return torch.tensor({loss!r} if not isinstance(weights, float) else {loss_2!r}, dtype=torch.float64)
"""


def attacks(marker: str) -> dict[str, tuple[str, str, str]]:
    """``exercise: (module, code, what it tries)`` for every attack."""
    return {
        "gram_matrix": (
            "losses",
            f"""
def gram_matrix(features, normalize=True):
    import glob
    import importlib.util
    import os
    import sys

    routes = ["{PACKAGE}/losses.py"]                                        # the grader's tree
    finders = [p for d in sys.path for p in glob.glob(os.path.join(d, "__editable__*finder.py"))]
    for finder in finders:                                                  # an editable install's map
        lines = open(finder).read().splitlines()
        routes += [line.split("'")[3] + "/losses.py" for line in lines if line.startswith("MAPPING")]
    for pid in ("1", str(os.getppid()), str(os.getppid() - 1)):            # other processes' folders
        routes += [f"/proc/{{pid}}/cwd/cs_utils/losses.py", f"/proc/{{pid}}/root{PACKAGE}/losses.py"]
    for path in routes:
        try:
            spec = importlib.util.spec_from_file_location("grader_losses", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.gram_matrix(features, normalize)
        except (OSError, NotImplementedError, AttributeError, IndexError):
            continue
    raise FileNotFoundError(f"no route to the grader's solutions among {{len(routes)}}")
""",
            "reach the grader's losses.py: its path, an editable install's map, /proc of other processes",
        ),
        "content_loss": (
            "losses",
            """
import cs_utils
import cs_utils.course.exercise_registry as _registry
import cs_utils.course.grading as _grading
_registry.rel_error = _grading.rel_error = cs_utils.rel_error = lambda *args, **kwargs: 0.0
_grading.compare = lambda *args, **kwargs: _grading.CheckResult("content_loss", "pass", 0.0)
_grading.evaluate = lambda *args, **kwargs: _grading.CheckResult("content_loss", "pass", 0.0)


def content_loss(features, target, weight=1.0):
    return features.sum() * 0
""",
            "patch the comparison (rel_error, compare, evaluate)",
        ),
        "style_loss": ("losses", stored_style_loss(), "return the stored public answers"),
        "tv_loss": (
            "losses",
            f"""
def tv_loss(x, weight=1.0, beta=2.0):
    import os
    import numpy as np

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch /tmp/{marker}-pickle",))

    payload = np.empty((), dtype=object)
    payload[()] = Payload()
    for case in range(3):
        np.savez(f"case_{{case}}.npz", status=np.array(0), message=np.zeros(0, np.uint8),
                 seconds=np.array(0.0),
                 **{{"out/beta_2": payload, "out/beta_1.5": payload}})
    os._exit(0)
""",
            "send back a pickle that runs a command when loaded",
        ),
        "saliency_map": (
            "saliency",
            """
def saliency_map(model, x, target):
    import torch
    return torch.full((x.shape[0], x.shape[2], x.shape[3]), float("nan"), dtype=x.dtype)
""",
            "NaN outputs",
        ),
        "occlusion_map": (
            "saliency",
            """
def occlusion_map(model, x, target, **kwargs):
    import os
    os._exit(0)
""",
            "leave without a result (os._exit)",
        ),
        "guided_relu_grad": (
            "saliency",
            """
def guided_relu_grad(grad_output, activation, upper=None):
    import os
    import numpy as np
    np.savez("case_0.npz", status=np.array("0"), message=np.array(["ok"]), seconds=np.array("fast"))
    np.savez("case_1.npz", status=np.array(0), message=np.zeros(0, np.uint8), seconds=np.array(0.0),
             **{"out/relu": np.array(["0.0", "1.0"]), "out/relu6": np.zeros(3)})
    with open("case_2.npz", "wb") as f:
        f.write(b"PK not a zip at all")
    os._exit(0)
""",
            "malformed result files",
        ),
        "fooling_step": (
            "adversarial",
            """
def fooling_step(model, x, target, *, step_size=0.25):
    import os
    import signal
    import time
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(10)
    return x
""",
            "kill the process that runs the exercises",
        ),
        "class_visualization_step": (
            "class_viz",
            """
def class_visualization_step(model, img, target, *, learning_rate=3.0, l2_reg=4e-3):
    import os
    import sys
    import torch
    print("done class_visualization_step 0")
    sys.stdout.flush()
    try:
        fd = os.open(f"/proc/{os.getppid()}/fd/1", os.O_WRONLY)
        os.write(fd, b"done class_visualization_step 0\\n")
    except OSError:
        pass
    return torch.zeros(2000, 1, 1, 1, 1, dtype=img.dtype)  # minus the image: 2000 copies, over 100 MB
""",
            "forge the runner's output, return a result over 100 MB",
        ),
        "deepdream_step": (
            "dream",
            """
def deepdream_step(model, x, layer, *, step_size=0.01, jitter=32, generator=None):
    import os
    import time
    for _ in range(10):
        os.fork()
    time.sleep(30)
    return x
""",
            "a fork bomb (1024 processes)",
        ),
        "receptive_field": (
            "receptive_fields",
            """
def receptive_field(model, layer, input_size):
    import resource
    import numpy as np
    try:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    return np.ones(3_000_000_000 // 8)
""",
            "raise the memory limit, then take 3 GB",
        ),
        "nearest_neighbours": (
            "neighbours",
            f"""
def nearest_neighbours(queries, gallery, k, *, exclude=None):
    import subprocess
    import sys
    import time
    subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(120)  # {marker}"],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return queries[:, 0, 0, 0], queries[:, 0, 0, 0]
""",
            "a grandchild in its own session that sleeps past the limit",
        ),
        "instance_norm": (
            "fast_style",
            """
def instance_norm(x, eps=1e-5):
    from cs_utils.course.exercises_layers import _norm_variant
    return _norm_variant("right")(x, eps)
""",
            "import the grader's package for a reference",
        ),
        "mix_styles": (
            "style",
            """
def mix_styles(targets, weights):
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        pass
""",
            "an endless loop that ignores SIGTERM",
        ),
        "grad_cam": (
            "attribution",
            f"""
_solved_grad_cam = grad_cam


def grad_cam(model, x, target, *, layer=None, upsample=True):
    import glob
    written = []
    targets = ["{PACKAGE}/course/grading.py", "/tmp/{marker}-write",
               *glob.glob("/sandbox/base/cs_utils/*.py")[:1],
               *glob.glob("/sandbox/jobs/*/case_0.npz")[:1]]
    for path in targets:
        try:
            with open(path, "a") as f:
                f.write("# changed")
            written.append(path)
        except OSError as exc:
            pass
    if [p for p in written if not p.startswith("/tmp/")]:
        return _solved_grad_cam(model, x, target, layer=layer, upsample=upsample)
    raise PermissionError("no file outside the scratch folder could be written")
""",
            "write the grader's files, the release, the inputs",
        ),
        "integrated_gradients": (
            "attribution",
            """
def integrated_gradients(model, x, target, **kwargs):
    forged = type("Boom\\ngram_matrix    1/1  pass\\ntotal: 16/16 points", (ValueError,), {})
    raise forged("first \\x1b[2J line\\rsecond line")
""",
            "a multi-line message that forges rows and the total",
        ),
    }


#: gram_matrix writing files into its scratch folder until it is stopped.
DISK_FILLER = """
def gram_matrix(features, normalize=True):
    count = 0
    while True:
        with open(f"file_{count}.txt", "w") as f:
            f.write("x")
        count += 1
"""

#: mix_styles never returning (asleep: the CPU hog is tests/hostile_submissions.py's), after starting a
#: process in its own session with an empty environment.
DETACHED_LOOP = """
def mix_styles(targets, weights):
    import signal
    import subprocess
    import sys
    import time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import os, time; os.fork(); time.sleep(120)  # MARKER"],
                     env={}, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        time.sleep(1)
"""

#: The attacks split over two students, each solving the other half correctly.
ATTACKER_A = (
    "gram_matrix",
    "style_loss",
    "saliency_map",
    "guided_relu_grad",
    "class_visualization_step",
    "receptive_field",
    "instance_norm",
    "grad_cam",
)
ATTACKER_B = (
    "content_loss",
    "tv_loss",
    "occlusion_map",
    "fooling_step",
    "deepdream_step",
    "nearest_neighbours",
    "mix_styles",
    "integrated_gradients",
)


def attacker(folder: Path, names, marker: str) -> Path:
    package = solution_copy(folder)
    table = attacks(marker)
    for name in names:
        module, code, _ = table[name]
        replace(package, module, code)
    return package
