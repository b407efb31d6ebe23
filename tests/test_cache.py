"""The cache's fast reader of saved phrases and summaries, against np.load itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voicecoach.cache import load_vector


@pytest.mark.parametrize("values", [np.linspace(-1, 1, 22051, dtype=np.float32),
                                    np.cumsum(np.ones(999)), np.zeros(0, np.float32),
                                    np.arange(10**7, 10**7 + 3, dtype=np.float64)])
def test_what_np_save_wrote_reads_back_the_same(tmp_path: Path, values: np.ndarray) -> None:
    path = tmp_path / "v.npy"
    np.save(path, values)
    loaded = load_vector(path)
    assert loaded.dtype == values.dtype
    assert np.array_equal(loaded, values)
    assert np.array_equal(loaded, np.load(path))
    assert not loaded.flags.writeable


@pytest.mark.parametrize("values", [np.arange(5, dtype=np.int16), np.ones((3, 2), np.float32),
                                    np.ones(4, ">f4")])
def test_other_arrays_are_left_to_np_load(tmp_path: Path, values: np.ndarray) -> None:
    path = tmp_path / "v.npy"
    np.save(path, values)
    assert np.array_equal(load_vector(path), values)


def test_a_file_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.npy"
    np.save(path, np.ones(100, np.float32))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="100 values"):
        load_vector(path)
