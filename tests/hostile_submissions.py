"""Hostile submissions for the grader's isolation tests: each attack class in several variants.

Every attack replaces one exercise function of a correct solution (a later ``def`` wins), tries each
of its variants, and ends by raising ``RuntimeError("ATTACK <name>: <k>/<n> got through: ...")``
(or by returning the stolen answer when a variant got through), so a test sees both that every
variant ran and that none worked. ``Targets`` holds the paths an attacker aims at; they are written
into the submission's code, as a student who read the grader's source would.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import fake_submissions as fake

ROOT = Path(__file__).resolve().parent.parent

#: Cheap exercises (no network model): the attacks live in these.
NAMES = ["gram_matrix", "content_loss", "style_loss", "tv_loss", "instance_norm", "mix_styles",
         "nearest_neighbours"]

_SIGNATURES = {
    "gram_matrix": ("losses", "def gram_matrix(features, normalize=True):"),
    "content_loss": ("losses", "def content_loss(features, target, weight=1.0):"),
    "style_loss": ("losses", "def style_loss(features, target_grams, weights=1.0):"),
    "tv_loss": ("losses", "def tv_loss(x, weight=1.0, beta=2.0):"),
    "instance_norm": ("fast_style", "def instance_norm(x, eps=1e-5):"),
    "mix_styles": ("style", "def mix_styles(targets, weights):"),
    "nearest_neighbours": ("neighbours", "def nearest_neighbours(queries, gallery, k, *, exclude=None):"),
}


@dataclass
class Targets:
    """What an attacker aims at (paths outside its sandbox)."""

    grader: str = str(ROOT)  # a grader's project (the developer's tree, or /autograder/source)
    bundle: str = "/autograder"  # Gradescope's layout
    class_dir: str = "/nonexistent-class"
    out: str = "/nonexistent-out"
    victim: str = "s00"  # another student of the class
    stolen: str = "/nonexistent-stolen"  # a folder holding a passing result of the attacked exercise
    marker: str = "cs-utils-hostile"


_HEADER = '''
import json as _json
import os as _os

_T = _json.loads({targets!r})


def sysv_key(marker):
    import zlib
    return zlib.crc32(marker.encode()) & 0x3FFFFFFF
_SEEN = []   # what a variant that got through reached


def _attempts(name, tries):
    """Run every variant; raise with how many got through (a variant raises when it is stopped)."""
    through = []
    for label, attempt in tries:
        try:
            attempt()
            through.append(label)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
    got = f"{{len(through)}}/{{len(tries)}} got through: {{','.join(through)}} {{_SEEN}}"
    raise RuntimeError(f"ATTACK {{name}}: {{got}}")
'''

#: exercise: (body, what it tries). The body sees ``_T`` (the targets) and ``_attempts``.
ATTACKS = {
    # ----------------------------------------------------------------- forge the grader's outputs
    "forge": '''
    forged = _json.dumps({"score": 16.0, "tests": [], "output": "all good"})
    results = _os.path.join(_T["bundle"], "results")

    def write(path, text=forged):
        with open(path, "w") as f:
            f.write(text)

    def replace_results_folder():
        import shutil
        shutil.rmtree(results)

    def link_results_folder():
        _os.symlink("/tmp", results + "-x")
        _os.replace(results + "-x", results)

    def fifo_at_results():
        _os.mkfifo(_os.path.join(results, "results.json"))

    def folder_at_results():
        _os.mkdir(_os.path.join(results, "results.json"))

    def own_report():
        report = {"points": 16, "max_points": 16, "exercises": [], "student": "me"}
        for name in _os.listdir(_os.path.join(_T["out"], "reports")):
            write(_os.path.join(_T["out"], "reports", name), _json.dumps(report))

    def grader_fds():                                      # the grader's open files, through /proc
        for pid in sorted(p for p in _os.listdir("/proc") if p.isdigit()):
            if _os.stat(f"/proc/{pid}").st_uid == _os.getuid():
                continue
            for fd in _os.listdir(f"/proc/{pid}/fd"):
                write(f"/proc/{pid}/fd/{fd}")
                return
        raise FileNotFoundError

    _attempts("forge", [
        ("grader's fds", grader_fds),
        ("results.json", lambda: write(_os.path.join(results, "results.json"))),
        ("rm results", replace_results_folder),
        ("link results", link_results_folder),
        ("fifo results.json", fifo_at_results),
        ("folder results.json", folder_at_results),
        ("grades.csv", lambda: write(_os.path.join(_T["out"], "grades.csv"), "student_id,score\\nme,16\\n")),
        ("reports", own_report),
        ("victim report", lambda: write(_os.path.join(_T["out"], "reports", _T["victim"] + ".json"), "{}")),
    ])
''',
    # ----------------------------------------------------------------- read the reference solution
    "steal": '''
    import glob
    import importlib.util
    import sys

    stolen = []

    def load(path):
        _SEEN.append(path)
        spec = importlib.util.spec_from_file_location("reference", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        stolen.append(module.content_loss(features, target, weight))

    def via_proc():
        for pid in sorted(p for p in _os.listdir("/proc") if p.isdigit()):
            for where in ("cwd", "root"):
                for tail in ("cs_utils/losses.py", _T["grader"].lstrip("/") + "/cs_utils/losses.py"):
                    path = f"/proc/{pid}/{where}/{tail}"
                    if _os.path.exists(path):
                        load(path)
                        return
        raise FileNotFoundError

    def search():
        tops = ("/tmp", "/autograder", "/work", "/root", "/srv", "/home", _os.path.dirname(_T["grader"]))
        for top in tops:
            for folder, dirs, files in _os.walk(top):
                dirs[:] = [d for d in dirs if d not in (".venv", "site-packages", ".git")][:50]
                if "losses.py" in files:
                    path = _os.path.join(folder, "losses.py")
                    with open(path) as f:
                        if "### BEGIN SOLUTION" in f.read():
                            load(path)
                            return
        raise FileNotFoundError

    def golden():
        import numpy as np
        with np.load(_os.path.join(_T["grader"], "data", "checks", "content_loss.npz")) as npz:
            stolen.append(npz.files)

    def editable_map():
        for folder in sys.path:
            for finder in glob.glob(_os.path.join(folder, "__editable__*finder.py")):
                for line in open(finder):
                    if line.startswith("MAPPING"):
                        load(line.split("'")[3] + "/losses.py")
                        return
        raise FileNotFoundError

    def hardlink():                                        # a link needs no read access to the folder's files
        _os.link(_os.path.join(_T["grader"], "cs_utils", "losses.py"), "reference.py")
        load("reference.py")

    def root_memory():                                     # a process of another user: the grader's
        for pid in sorted(p for p in _os.listdir("/proc") if p.isdigit()):
            if _os.stat(f"/proc/{pid}").st_uid != _os.getuid():
                with open(f"/proc/{pid}/environ", "rb") as f:
                    f.read()
                return
        raise FileNotFoundError

    tries = [
        ("hardlink", hardlink),
        ("another process's environ", root_memory),
        ("grader tree", lambda: load(_os.path.join(_T["grader"], "cs_utils", "losses.py"))),
        ("bundle", lambda: load(_os.path.join(_T["bundle"], "source", "cs_utils", "losses.py"))),
        ("proc", via_proc),
        ("search", search),
        ("golden files", golden),
        ("editable install", editable_map),
    ]
    _attempts("steal", tries)   # a variant that got through is named in the message
''',
    # ----------------------------------------------------------------- change the grader
    "tamper": '''
    import glob
    import site
    import sys

    patch = "\\n\\ndef compare(*args, **kwargs):  # always pass\\n    raise SystemExit(0)\\n"

    def append(path):
        with open(path, "a") as f:
            f.write(patch)

    def site_hook():
        for folder in site.getsitepackages() + [p for p in sys.path if p.endswith("site-packages")]:
            with open(_os.path.join(folder, "zz_always_pass.pth"), "w") as f:
                f.write("import os\\n")
            return
        raise FileNotFoundError

    def base_copy():
        import cs_utils.course.grading as shipped
        append(shipped.__file__)

    def rename_grader():
        path = _os.path.join(_T["grader"], "cs_utils", "course", "grading.py")
        _os.rename(path, path + ".old")

    _attempts("tamper", [
        ("grader grading.py", lambda: append(
            _os.path.join(_T["grader"], "cs_utils", "course", "grading.py"))),
        ("bundle grading.py", lambda: append(
            _os.path.join(_T["bundle"], "source", "cs_utils", "course", "grading.py"))),
        ("bundle autograder.py", lambda: append(
            _os.path.join(_T["bundle"], "source", "cs_utils", "instructor", "autograder.py"))),
        ("sandbox's copy", base_copy),
        ("site-packages .pth", site_hook),
        ("rename grading.py", rename_grader),
        ("chmod grader", lambda: _os.chmod(_os.path.join(_T["grader"], "cs_utils"), 0o777)),
    ])
''',
    # ----------------------------------------------------------------- the class: cache, neighbours
    "classmate": '''
    import glob

    def cached_outputs():
        found = glob.glob(_os.path.join(_T["out"], ".cache", "reference", "*.npz"))
        if not found:
            raise FileNotFoundError
        open(found[0], "rb").read()

    def rewrite_submission():
        victim = _os.path.join(_T["class_dir"], _T["victim"])
        for path in glob.glob(_os.path.join(victim, "**", "*.py"), recursive=True):
            with open(path, "w") as f:
                f.write("raise SystemExit('sabotaged')\\n")
                return
        raise FileNotFoundError

    def plant_report():
        report = {"points": 16, "max_points": 16, "exercises": [], "settings": {}}
        with open(_os.path.join(_T["out"], "reports", "s99_planted.json"), "w") as f:
            f.write(_json.dumps(report))

    def list_class():
        if not _os.listdir(_T["class_dir"]):
            raise FileNotFoundError

    import sys

    own = {_os.path.realpath(p) for p in sys.argv[1:5]}     # the runner's base, submission, jobs, scratch

    def neighbour_scratch():
        for scratch in glob.glob("/tmp/grade-sandbox-*/scratch"):
            if _os.path.realpath(scratch) in own:
                continue
            for name in _os.listdir(scratch):
                open(_os.path.join(scratch, name, "log.txt")).read()
                return
        raise FileNotFoundError

    def neighbour_submission():
        for work in glob.glob("/tmp/grade-*/submission"):
            if _os.path.realpath(work) in own:
                continue
            for name in _os.listdir(work):
                open(_os.path.join(work, name)).read()
                return
        raise FileNotFoundError

    def neighbour_by_name():                                 # names guessed, not listed
        for pid in range(2, 4 * 32768):
            try:
                cwd = _os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            mine = any(_os.path.realpath(cwd).startswith(_os.path.dirname(p)) for p in own)
            if cwd.startswith("/tmp/grade-") and not mine:
                _os.listdir(cwd)
                return
        raise FileNotFoundError

    _attempts("classmate", [
        ("cached outputs", cached_outputs),
        ("rewrite victim", rewrite_submission),
        ("plant report", plant_report),
        ("list class", list_class),
        ("neighbour scratch", neighbour_scratch),
        ("neighbour submission", neighbour_submission),
        ("neighbour by name", neighbour_by_name),
    ])
''',
    # ----------------------------------------------------------------- results the grader trips over
    "fifo": '''
    import socket

    here = _os.getcwd()                                     # the scratch folder of this exercise
    for i in range(3):
        path = _os.path.join(here, f"case_{i}.npz")
        if i == 0:
            _os.mkfifo(path)
        elif i == 1:
            _os.symlink("/dev/zero", path)
        else:
            socket.socket(socket.AF_UNIX).bind(path)
    log = _os.path.join(here, "log.txt")
    _os.rename(log, log + ".old")
    _os.mkfifo(log)
    _os._exit(0)
''',
    "stolen_result": '''
    import shutil

    here = _os.getcwd()
    name = _os.path.basename(here)
    parent = _os.path.dirname(here)
    _os.chdir("/")
    shutil.rmtree(here)
    _os.symlink(_T["stolen"], _os.path.join(parent, name))   # a folder of passing results elsewhere
    _os._exit(0)
''',
    "deep": '''
    _os.chdir("/tmp" if not _os.access(_os.getcwd(), _os.W_OK) else _os.getcwd())
    for _ in range(100000):
        _os.mkdir("d")
        _os.chdir("d")
''',
    "wide": '''
    for i in range(200000):
        _os.mkdir(f"d{i}")
''',
    # ----------------------------------------------------------------- memory outside the address space
    "shm": '''
    for i in range(64):                                  # files under the 64 MB file size limit
        with open(f"/dev/shm/{_T['marker']}-{i}", "wb") as f:
            f.write(b"x" * (32 * 2**20))
    raise RuntimeError("ATTACK shm: 1/1 got through: 2 GB in /dev/shm")
''',
    "tmpfile": '''
    for i in range(64):
        with open(f"/tmp/{_T['marker']}-{i}", "wb") as f:
            f.write(b"x" * (32 * 2**20))
    raise RuntimeError("ATTACK tmpfile: 1/1 got through: 2 GB in /tmp")
''',
    "memfd": '''
    kept = []
    for _ in range(64):
        fd = _os.memfd_create(_T["marker"])
        _os.write(fd, b"x" * (32 * 2**20))
        kept.append(fd)
    raise RuntimeError("ATTACK memfd: 1/1 got through: 2 GB in memfds")
''',
    "sysv": '''
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    size = 256 * 2**20
    for i in range(8):                                   # segments outlive their process
        ident = libc.shmget(sysv_key(_T["marker"]) + i, ctypes.c_size_t(size), 0o1600)
        if ident < 0:
            raise RuntimeError(f"ATTACK sysv: 0/1 got through: shmget errno {ctypes.get_errno()}")
        address = libc.shmat(ident, None, 0)
        if address in (None, 2**64 - 1):
            raise RuntimeError(f"ATTACK sysv: 0/1 got through: shmat errno {ctypes.get_errno()}")
        ctypes.memset(address, 1, size)
        libc.shmdt(ctypes.c_void_p(address))
    raise RuntimeError("ATTACK sysv: 1/1 got through: 2 GB of System V shared memory")
''',
    "hog": '''
    import subprocess
    import sys

    for _ in range(8):
        subprocess.Popen([sys.executable, "-c", "while True: pass  # " + _T["marker"]],
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        pass
''',
}


def _code(exercise: str, attack: str, targets: Targets) -> str:
    module, signature = _SIGNATURES[exercise]
    return _HEADER.format(targets=json.dumps(asdict(targets))) + "\n\n" + signature + ATTACKS[attack]


def hostile(folder: Path, plan: dict[str, str], targets: Targets) -> Path:
    """A solution copy in ``folder`` whose exercises in ``plan`` (exercise: attack) are attacks."""
    package = fake.solution_copy(folder)
    for exercise, attack in plan.items():
        module, _ = _SIGNATURES[exercise]
        fake.replace(package, module, _code(exercise, attack, targets))
    return package


# --------------------------------------------------------------------------- a hostile class

#: The students of a hostile class: id -> plan (exercise: attack). ``a_hog`` and ``b_victim`` sort
#: first, so with two sandboxes at once the hog runs beside a correct submission.
CLASS = {
    "a_hog": {"content_loss": "hog"},
    "b_victim": {},
    "c_forger": {"gram_matrix": "forge", "content_loss": "steal", "style_loss": "tamper",
                 "tv_loss": "classmate"},
    "d_tripper": {"gram_matrix": "fifo", "content_loss": "stolen_result", "style_loss": "deep",
                  "tv_loss": "wide"},
    "e_hoarder": {"content_loss": "shm", "tv_loss": "tmpfile", "instance_norm": "memfd",
                  "mix_styles": "sysv"},
    "=SUM(1;2)": {},
}

#: attack: (the statuses it may end with, always with zero points; what an "error" message says).
STOPPED_AS = {
    "hog": ({"timeout"}, None),
    "forge": ({"error"}, "ATTACK forge: 0/"),
    "steal": ({"error"}, "ATTACK steal: 0/"),
    "tamper": ({"error"}, "ATTACK tamper: 0/"),
    "classmate": ({"error"}, "ATTACK classmate: 0/"),
    "fifo": ({"invalid"}, None),
    "stolen_result": ({"invalid", "crashed"}, None),
    "deep": ({"crashed"}, None),
    "wide": ({"crashed"}, None),
    "shm": ({"memory", "crashed", "error"}, "No space left on device"),   # bubblewrap: its own small /dev/shm
    "tmpfile": ({"memory", "crashed", "error"}, "No space left on device"),
    "memfd": ({"memory"}, None),
    "sysv": ({"memory"}, None),
}


def sysv_key(marker: str) -> int:
    """The first System V key the ``sysv`` attack uses (eight in a row)."""
    import zlib

    return zlib.crc32(marker.encode()) & 0x3FFFFFFF


def world_readable_folder(prefix: str) -> Path:
    """A new folder under /tmp, private while a test fills it: :func:`open_to_all` then lets everyone
    enter and read it (as a course folder often is), so what keeps a submission out of it must be
    the grader's doing."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=prefix))


def open_to_all(folder: Path) -> None:
    """Every folder under ``folder`` 0755, every file 0644 (0755 if its owner may run it)."""
    import os

    for path, _, files in os.walk(folder):
        os.chmod(path, 0o755)
        for name in files:
            file = os.path.join(path, name)
            os.chmod(file, 0o755 if os.stat(file).st_mode & 0o100 else 0o644)


def stolen_results(folder: Path, name: str, cases) -> Path:
    """``folder/<name>/case_<i>.npz`` holding passing results for every case of ``cases`` (what a
    classmate's scratch would hold): a submission that linked to it would pass."""
    import numpy as np

    from cs_utils.course import grading

    target = folder / name
    target.mkdir(parents=True)
    for i in range(cases.n_hidden + 1):
        outputs = cases.expected(name, i)
        arrays = {"status": np.array(0), "message": np.zeros(0, np.uint8), "seconds": np.array(0.1)}
        arrays.update({f"out/{k}": v for k, v in outputs.items()})
        grading.write_npz(target / f"case_{i}.npz", arrays)
    return target


def hostile_class(folder: Path, targets: Targets) -> Path:
    """The class folder: one submission per student of :data:`CLASS`."""
    folder.mkdir(parents=True, exist_ok=True)
    for student, plan in CLASS.items():
        hostile(folder / student, plan, targets)
    return folder
