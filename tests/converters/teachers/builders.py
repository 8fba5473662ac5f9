"""Small teachers built the way a team builds its own, outside edgerec's teacher code.

* :func:`keras_sasrec` — a causal SASRec-style Keras model (item embedding, one causal
  self-attention block, a dense layer over the teacher's vocabulary), trained on the
  tiny walk log with **right padding** and no ``[MASK]``; output ``[B, L, V]``, the
  next-item scores at every position. Saved as ``.keras``, exported as a SavedModel and
  converted to ONNX with tf2onnx.
* :func:`torch_gru4rec` — a PyTorch GRU recommender in RecBole's shape (``item_seq``
  and ``item_seq_len`` inputs, int64, right padding, scores ``[B, V]`` gathered at the
  last real position), exported with ``torch.onnx.export``.

The teacher's vocabulary is its own: ``[PAD]`` at 0, the data's items in reverse
order, one item the data lacks, and one data item left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MAX_LEN = 24  # longer than the walk histories, so every row is padded
DROPPED = "i7"  # a data item the teacher does not know
EXTRA = "zz-teacher-only"


def teacher_tokens(split) -> list[str]:
    items = [i for i in split.vocab.item_ids if i != DROPPED]
    return ["[PAD]", *reversed(items), EXTRA]


def training_rows(split, tokens: list[str], max_len: int = MAX_LEN):
    """Right-padded teacher-index rows and next-item labels of every training prefix."""
    index = {t: i for i, t in enumerate(tokens)}
    raw = split.vocab.item_ids
    xs, ys = [], []
    for seq in split.train:
        ids = [index.get(raw[i - 1], -1) for i in seq]
        ids = [i for i in ids if i >= 0][: max_len + 1]
        if len(ids) < 2:
            continue
        x = np.zeros(max_len, np.int32)
        y = np.zeros(max_len, np.int32)
        x[: len(ids) - 1] = ids[:-1]
        y[: len(ids) - 1] = ids[1:]
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.stack(ys)


def write_vocab(path: Path, tokens: list[str]) -> Path:
    path.write_text(json.dumps(tokens))
    return path


def keras_sasrec(split, out_dir: Path, epochs: int = 30, seed: int = 0) -> dict[str, Path]:
    """Train and write the Keras teacher: ``model.keras``, ``saved_model/``, ``model.onnx``."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tokens = teacher_tokens(split)
    v, d = len(tokens), 32
    inp = keras.Input((MAX_LEN,), dtype="int32", name="item_seq")
    x = keras.layers.Embedding(v, d)(inp)
    att = keras.layers.MultiHeadAttention(2, d // 2)(x, x, use_causal_mask=True)
    x = keras.layers.LayerNormalization()(x + att)
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(d, activation="relu")(x))
    logits = keras.layers.Dense(v, name="scores")(x)
    model = keras.Model(inp, logits)
    xs, ys = training_rows(split, tokens)
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        xs, ys, sample_weight=(ys > 0).astype("float32"), epochs=epochs, batch_size=64, verbose=0
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"vocab": write_vocab(out_dir / "items.json", tokens)}
    paths["keras"] = out_dir / "model.keras"
    model.save(paths["keras"])
    paths["savedmodel"] = out_dir / "saved_model"
    model.export(
        str(paths["savedmodel"]),
        format="tf_saved_model",
        input_signature=[tf.TensorSpec([None, MAX_LEN], tf.int32, name="item_seq")],
        verbose=False,
    )
    paths["onnx"] = out_dir / "model.onnx"
    savedmodel_to_onnx(paths["savedmodel"], paths["onnx"])
    return paths


def savedmodel_to_onnx(saved: Path, out: Path) -> Path:
    """tf2onnx's ``--saved-model`` path."""
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "tf2onnx.convert",
            "--saved-model",
            str(saved),
            "--output",
            str(out),
            "--opset",
            "17",
        ],
        check=True,
        capture_output=True,
    )
    return out


def torch_gru4rec(split, out_dir: Path, epochs: int = 40, seed: int = 0) -> dict[str, Path]:
    """Train a PyTorch GRU recommender and export it with ``torch.onnx.export``."""
    import torch

    torch.manual_seed(seed)
    tokens = teacher_tokens(split)
    v, d = len(tokens), 32

    class GRU4Rec(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(v, d, padding_idx=0)
            self.gru = torch.nn.GRU(d, d, batch_first=True)
            self.out = torch.nn.Linear(d, v)

        def all_positions(self, item_seq: torch.Tensor) -> torch.Tensor:
            h, _ = self.gru(self.emb(item_seq))
            return self.out(h)

        def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
            h, _ = self.gru(self.emb(item_seq))
            last = (item_seq_len - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.shape[-1])
            return self.out(h.gather(1, last).squeeze(1))

    model = GRU4Rec()
    xs, ys = training_rows(split, tokens)
    x, y = torch.from_numpy(xs).long(), torch.from_numpy(ys).long()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for start in range(0, len(x), 64):
            logits = model.all_positions(x[start : start + 64])
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, v), y[start : start + 64].reshape(-1), ignore_index=0
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"onnx": out_dir / "gru4rec.onnx"}
    sample = (x[:2], torch.tensor([3, 5], dtype=torch.long))
    torch.onnx.export(
        model,
        sample,
        str(paths["onnx"]),
        input_names=["item_seq", "item_seq_len"],
        output_names=["scores"],
        dynamic_axes={
            "item_seq": {0: "batch"},
            "item_seq_len": {0: "batch"},
            "scores": {0: "batch"},
        },
        dynamo=False,
    )
    # RecBole's dataset.field2id_token dump
    paths["vocab"] = out_dir / "field2id_token.json"
    paths["vocab"].write_text(json.dumps({"item_id": tokens, "user_id": ["[PAD]"]}))
    return paths
