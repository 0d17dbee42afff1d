"""Golden checks: rel. error, PASS/FAIL lines, hints that name the mistake, reproducible golden files."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from cs_utils.course import exercises_pixels, grading
from cs_utils.instructor.release import marked_regions

ROOT = Path(__file__).resolve().parent.parent


def test_rel_error_is_the_largest_elementwise_relative_difference():
    assert grading.rel_error([1.0, 2.0], [1.0, 3.0]) == pytest.approx(1 / 5)
    assert grading.rel_error([0.0, 4.0], [0.0, 2.0]) == pytest.approx(2 / 6)
    assert grading.rel_error([1e-12], [0.0]) == pytest.approx(1e-12 / 1e-8)  # the 1e-8 floor
    assert grading.rel_error([np.inf, 1.0], [np.inf, 1.0]) == 0.0
    assert grading.rel_error([np.nan], [1.0]) == np.inf
    with pytest.raises(ValueError, match="shapes differ"):
        grading.rel_error(np.zeros(3), np.zeros(4))


def _marked_functions(root: Path) -> set[tuple[str, str]]:
    """(module, function) of every function in cs_utils whose body holds a marked solution."""
    found = set()
    for path in sorted((root / "cs_utils").glob("*.py")):
        lines = path.read_text().splitlines(keepends=True)
        regions = marked_regions(lines, str(path))
        if not regions:
            continue
        defs = [n for n in ast.walk(ast.parse("".join(lines)))
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for region in regions:
            around = [d for d in defs if d.lineno <= region.begin + 1 <= d.end_lineno]
            assert around, f"{path.name} line {region.begin + 1}: a marked region outside any function"
            found.add((path.stem, max(around, key=lambda d: d.lineno).name))
    return found


def test_every_marked_function_has_a_check_and_a_golden_file():
    registered = {(e.module, e.function) for e in grading.EXERCISES.values()}
    assert _marked_functions(ROOT) == registered
    golden = {p.stem for p in grading.CHECKS_DIR.glob("*.npz")}
    assert golden == set(grading.EXERCISES), "run `make checks`: golden files and exercises differ"
    total = sum(p.stat().st_size for p in grading.CHECKS_DIR.glob("*.npz"))
    assert total < 1_000_000, f"golden files take {total} bytes; keep them small"


@pytest.mark.parametrize("name", grading.exercise_names())
def test_the_solution_passes_and_every_stored_mistake_is_named(name, capsys):
    grading.check(name)
    assert capsys.readouterr().out.startswith(f"PASS {name} (rel. error ")
    exercise = grading.get_exercise(name)
    assert exercise.mistakes, "each exercise names at least one usual mistake"
    for mistake in exercise.mistakes:
        result = grading.evaluate(name, mistake.fn)
        assert result.status == "fail" and result.rel_error > exercise.tolerance
        assert result.message == mistake.hint + ".", (mistake.key, result.line())


def test_fail_line_has_the_error_and_a_hint_and_raises(capsys):
    def tv_without_pixel_crop(x, weight=1.0, beta=2.0):
        return weight * ((x[..., :, 1:] - x[..., :, :-1]).pow(2).sum() + x.sum() * 0)

    with pytest.raises(AssertionError, match=r"FAIL tv_loss \(rel\. error 0\.\d+\): tv = weight"):
        grading.check("tv_loss", tv_without_pixel_crop)
    assert capsys.readouterr().out.startswith("FAIL tv_loss (rel. error ")


def test_float32_results_pass_within_tolerance_and_near_misses_are_told_apart():
    def gram_float32(features, normalize=True):
        n, c, h, w = features.shape
        flat = features.reshape(n, c, h * w).float()
        return (flat @ flat.transpose(1, 2)) / (c * h * w if normalize else 1)

    result = grading.evaluate("gram_matrix", gram_float32)
    assert result.status == "fail" and result.message.startswith("close, but not within 1e-06")
    assert 1e-6 < result.rel_error < 1e-3


def test_not_implemented_says_which_function_to_write():
    def unwritten(features, normalize=True):
        raise NotImplementedError

    result = grading.evaluate("gram_matrix", unwritten)
    assert result.status == "not implemented"
    assert result.message == "not implemented yet: write gram_matrix in cs_utils/losses.py"
    with pytest.raises(AssertionError, match="FAIL gram_matrix \\(not implemented\\)"):
        grading.check("gram_matrix", unwritten)


def test_style_loss_points_to_an_unwritten_gram_matrix(monkeypatch):
    import cs_utils.losses as losses

    def gram_matrix(features, normalize=True):
        raise NotImplementedError

    monkeypatch.setattr(losses, "gram_matrix", gram_matrix)
    result = grading.evaluate("style_loss")
    assert result.status == "not implemented"
    assert "style_loss calls gram_matrix, which is not implemented yet: write gram_matrix" in result.message


def test_wrong_shape_none_exceptions_and_in_place_edits_fail_with_the_reason():
    def flattened(features, normalize=True):
        return features.flatten(1)

    def no_return(features, normalize=True):
        features.sum()

    def crashes(features, normalize=True):
        return features @ features

    def in_place(x, weight=1.0, beta=2.0):
        return x.clamp_(0, 0.5).sum()

    assert "has shape (2, 120), expected (2, 4, 4)" in grading.evaluate("gram_matrix", flattened).message
    assert "did you forget `return`?" in grading.evaluate("gram_matrix", no_return).message
    crash = grading.evaluate("gram_matrix", crashes)
    assert crash.status == "error" and crash.message.startswith("RuntimeError: ")
    assert "in crashes" in crash.message
    assert "was changed in place" in grading.evaluate("tv_loss", in_place).message


def test_a_hook_left_on_the_model_fails(lite0):
    from cs_utils.saliency import saliency_map

    def leaky(model, x, target):
        model.stem.register_forward_hook(lambda *args: None)
        return saliency_map(model, x, target)

    result = grading.evaluate("saliency_map", leaky)
    assert result.status == "fail" and result.message.startswith("hooks were left on the model")


def test_occlusion_one_window_at_a_time_fails_with_the_vectorisation_hint():
    unbatched = exercises_pixels._occlusion_variant("right", batched=False)  # one forward pass per window
    result = grading.evaluate("occlusion_map", unbatched)
    assert result.status == "fail" and result.rel_error < 1e-3
    assert result.message.startswith("right values, but 26 forward passes where 5 are enough")


def test_golden_files_regenerate_byte_for_byte(tmp_path, capsys):
    names = ["tv_loss", "saliency_map"]
    assert grading.main(["--generate", *names, "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("wrote ") == 2
    for name in names:
        assert (tmp_path / f"{name}.npz").read_bytes() == (grading.CHECKS_DIR / f"{name}.npz").read_bytes()


def test_write_npz_has_no_timestamps_and_loads_with_numpy(tmp_path):
    arrays = {"b": np.arange(3.0), "a/x": np.array(2.5), "c": np.eye(2, dtype=np.float32)}
    grading.write_npz(tmp_path / "one.npz", arrays)
    grading.write_npz(tmp_path / "two.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "one.npz") as loaded:
        assert loaded.files == ["a/x", "b", "c"]
        assert loaded["a/x"].shape == () and loaded["c"].dtype == np.float32
        np.testing.assert_array_equal(loaded["b"], arrays["b"])


def test_evaluate_leaves_torch_threads_alone():
    threads = torch.get_num_threads()
    grading.evaluate("content_loss")
    assert torch.get_num_threads() == threads
