import numpy as np

from edgerec.teacher.cloze import cloze_epoch


def test_cloze_windows_masks_and_labels() -> None:
    rng = np.random.default_rng(0)
    seqs = [np.arange(1, 121, dtype=np.int32), np.array([5, 6, 7], np.int32)]
    x, y = cloze_epoch(seqs, 50, 999, 0.2, 0.0, 1.0, rng)
    assert x.shape == y.shape and x.shape[1] == 50
    assert len(x) == 3 + 1  # ceil(120/50)=3 windows + 1
    masked = y > 0
    assert masked.any(axis=1).all(), "every window has a masked position"
    assert (x[masked] == 999).all(), "masked positions hold [MASK]"
    assert (x[~masked] != 999).all()
    # labels are the original items at the masked positions
    short = x[(x != 0).sum(axis=1) == 3][0]
    assert set(short[(short != 999) & (short != 0)]) <= {5, 6, 7}


def test_last_item_only_masking() -> None:
    rng = np.random.default_rng(1)
    seqs = [np.arange(1, 40, dtype=np.int32)] * 10
    x, y = cloze_epoch(seqs, 50, 999, 0.2, 1.0, 1.0, rng)
    assert ((y > 0).sum(axis=1) == 1).all()
    assert (y[:, -1] > 0).all()


def test_deterministic_for_seed() -> None:
    seqs = [np.arange(1, 80, dtype=np.int32)] * 5
    a = cloze_epoch(seqs, 20, 99, 0.3, 0.1, 1.0, np.random.default_rng(3))
    b = cloze_epoch(seqs, 20, 99, 0.3, 0.1, 1.0, np.random.default_rng(3))
    assert all((p == q).all() for p, q in zip(a, b, strict=True))
