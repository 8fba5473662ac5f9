"""BERT4Rec in Keras 3: item + learned positional embeddings, bidirectional
post-LN transformer blocks, and scores tied to the item embedding table.

The same network serves as teacher and (smaller, finite ``mask_value``) as the
converter's student, so it is written to convert cleanly:

* the padding mask is applied with a configurable finite logit (``mask_value``):
  full-int8 quantization collapses on Keras' ``-1e9``;
* GELU is the tanh form by default (no ``Erfc`` in tf2onnx output);
* scores are ``h @ E^T + b`` over the *whole* table, then sliced to items
  ``1..n`` — slicing the table instead would store it twice after folding.

Inference ``call(items)`` takes ``[B, L]`` int32 ids (left-padded, ``[MASK]``
last, see :mod:`edgerec.features`) and returns ``[B, n]`` scores of the masked
last position. Training uses :meth:`BERT4Rec.encode` plus
:meth:`BERT4Rec.score_hidden` on the masked positions only.

:class:`SASRec` is the causal variant (``model.kind = "sasrec"``): the same layers
with attention restricted to earlier positions, trained to predict the next item at
every position (:func:`edgerec.teacher.cloze.causal_epoch`). It keeps the export
contract: it takes the same ``[1, L]`` rows (the trailing ``[MASK]`` is ignored, as
causal attention never lets an earlier position see it) and scores from the last
real position, ``L - 2``. :meth:`BERT4Rec.cloze_hidden` gives, for either kind, the
hidden state that predicts the item *at* each position of a Cloze row, which is how
the converter's (BERT4Rec-form) student reads a teacher's soft targets.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from edgerec.teacher.config import ModelConfig

PACKAGE = "edgerec"


def _gelu(approximate: bool):
    def act(x):
        return keras.activations.gelu(x, approximate=approximate)

    return act


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedSelfAttention(keras.layers.Layer):
    """Multi-head self-attention whose padded keys get a finite logit."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        mask_value: float = -1e9,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout_rate = dropout
        self.mask_value = mask_value
        self.qkv = keras.layers.Dense(3 * d_model, name="qkv")
        self.out = keras.layers.Dense(d_model, name="out")
        self.dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape: Any) -> None:
        self.qkv.build(input_shape)
        self.out.build(input_shape[:-1] + (self.d_model,))
        super().build(input_shape)

    def call(self, x: Any, key_mask: Any, training: bool = False) -> Any:
        """``x``: [B, L, d]; ``key_mask``: [B, 1, 1, L] bool, True for real tokens."""
        length = ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (-1, length, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # [3, B, H, L, dh]
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (self.head_dim**-0.5)
        logits = ops.where(key_mask, logits, ops.cast(self.mask_value, logits.dtype))
        probs = self.dropout(ops.softmax(logits, axis=-1), training=training)
        ctx = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))  # [B, L, H, dh]
        return self.out(ops.reshape(ctx, (-1, length, self.d_model)))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "dropout": self.dropout_rate,
            "mask_value": self.mask_value,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class EncoderBlock(keras.layers.Layer):
    """Post-LN transformer block: attention + FFN, each with residual and LayerNorm."""

    def __init__(self, cfg: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cfg = dict(cfg)
        c = ModelConfig(**self.cfg)
        self.attention = MaskedSelfAttention(
            c.d_model, c.num_heads, c.attention_dropout, c.mask_value, name="attention"
        )
        self.ffn_in = keras.layers.Dense(c.ffn_dim, activation=_gelu(c.gelu_approximate))
        self.ffn_out = keras.layers.Dense(c.d_model)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.drop1 = keras.layers.Dropout(c.dropout)
        self.drop2 = keras.layers.Dropout(c.dropout)

    def build(self, input_shape: Any) -> None:
        d = self.cfg["d_model"]
        self.attention.build(input_shape)
        self.ffn_in.build(input_shape)
        self.ffn_out.build(input_shape[:-1] + (self.cfg["ffn_dim"],))
        self.norm1.build(input_shape)
        self.norm2.build(input_shape[:-1] + (d,))
        super().build(input_shape)

    def call(self, x: Any, key_mask: Any, training: bool = False) -> Any:
        a = self.attention(x, key_mask, training=training)
        x = self.norm1(x + self.drop1(a, training=training))
        f = self.ffn_out(self.ffn_in(x))
        return self.norm2(x + self.drop2(f, training=training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "cfg": self.cfg}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BERT4Rec(keras.Model):
    """BERT4Rec with a tied output layer.

    Args:
        num_items: catalog size ``n``; the embedding table has ``n + 2`` rows
            (pad 0, items ``1..n``, mask ``n + 1``).
        cfg: a :class:`ModelConfig` or its dict form.
    """

    def __init__(self, num_items: int, cfg: ModelConfig | dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        c = cfg if isinstance(cfg, ModelConfig) else ModelConfig(**cfg)
        self.num_items = int(num_items)
        self.model_cfg = c
        self.item_embedding = keras.layers.Embedding(
            self.num_items + 2,
            c.d_model,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="item_embedding",
        )
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(c.max_len, c.d_model),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        self.embed_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="embed_norm")
        self.embed_drop = keras.layers.Dropout(c.dropout)
        block_cfg = {k: getattr(c, k) for k in ModelConfig.__dataclass_fields__}
        self.blocks = [EncoderBlock(block_cfg, name=f"block_{i}") for i in range(c.num_blocks)]
        self.head_dense = keras.layers.Dense(
            c.d_model, activation=_gelu(c.gelu_approximate), name="head_dense"
        )
        self.head_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="head_norm")
        self.output_bias = self.add_weight(
            name="output_bias", shape=(self.num_items + 2,), initializer="zeros"
        )
        self.build((None, c.max_len))

    def build(self, input_shape: Any) -> None:
        d = self.model_cfg.d_model
        self.item_embedding.build(input_shape)
        self.embed_norm.build((None, None, d))
        for block in self.blocks:
            block.build((None, None, d))
        self.head_dense.build((None, d))
        self.head_norm.build((None, d))
        self.built = True

    @property
    def max_len(self) -> int:
        return self.model_cfg.max_len

    def encode(self, items: Any, training: bool = False) -> Any:
        """Hidden states ``[B, L, d]`` of every position."""
        items = ops.cast(items, "int32")
        key_mask = ops.not_equal(items, 0)[:, None, None, :]
        x = self.item_embedding(items)
        x = x + ops.cast(self.position_embedding, x.dtype)[None, :, :]
        x = self.embed_drop(self.embed_norm(x), training=training)
        for block in self.blocks:
            x = block(x, key_mask, training=training)
        return x

    def score_hidden(self, hidden: Any) -> Any:
        """Scores ``[M, n]`` for hidden vectors ``[M, d]`` (tied to the item table)."""
        h = self.head_norm(self.head_dense(hidden))
        table = ops.cast(self.item_embedding.embeddings, h.dtype)
        logits = ops.matmul(h, ops.transpose(table)) + ops.cast(self.output_bias, h.dtype)
        return logits[:, 1 : self.num_items + 1]

    def call(self, items: Any, training: bool = False) -> Any:
        """Next-item scores ``[B, n]`` for rows whose last position is ``[MASK]``."""
        hidden = self.encode(items, training=training)
        return self.score_hidden(hidden[:, -1, :])

    def cloze_hidden(self, items: Any, training: bool = False) -> Any:
        """``[B, L, d]``: position ``t`` holds the hidden state predicting the item at ``t``
        of a Cloze row (``[MASK]`` where an item is hidden)."""
        return self.encode(items, training=training)

    def get_config(self) -> dict[str, Any]:
        cfg = {k: getattr(self.model_cfg, k) for k in ModelConfig.__dataclass_fields__}
        return {"num_items": self.num_items, "cfg": cfg, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BERT4Rec:
        return cls(config["num_items"], config["cfg"], name=config.get("name"))


@keras.saving.register_keras_serializable(package=PACKAGE)
class SASRec(BERT4Rec):
    """Causal next-item transformer (SASRec-style) with BERT4Rec's layers and contract.

    Attention is restricted to the same and earlier positions, and position ``t`` is
    trained to predict the item at ``t + 1``. Rows are the shared ``[B, L]`` form with
    ``[MASK]`` last; the score comes from position ``L - 2``, the last history item.
    """

    def encode(self, items: Any, training: bool = False) -> Any:
        items = ops.cast(items, "int32")
        length = ops.shape(items)[1]
        causal = ops.tril(ops.ones((length, length), dtype="bool"))[None, None, :, :]
        key_mask = ops.logical_and(ops.not_equal(items, 0)[:, None, None, :], causal)
        x = self.item_embedding(items)
        x = x + ops.cast(self.position_embedding, x.dtype)[None, :, :]
        x = self.embed_drop(self.embed_norm(x), training=training)
        for block in self.blocks:
            x = block(x, key_mask, training=training)
        return x

    def call(self, items: Any, training: bool = False) -> Any:
        """Next-item scores ``[B, n]`` from the last history position of each row."""
        hidden = self.encode(items, training=training)
        return self.score_hidden(hidden[:, -2, :])

    def cloze_hidden(self, items: Any, training: bool = False) -> Any:
        """For a Cloze row: hidden masked items become padding (the causal model never
        saw ``[MASK]`` inside a row) and position ``t`` takes the state of ``t - 1``."""
        items = ops.cast(items, "int32")
        mask_id = self.num_items + 1
        visible = ops.where(ops.equal(items, mask_id), ops.zeros_like(items), items)
        hidden = self.encode(visible, training=training)
        return ops.concatenate([ops.zeros_like(hidden[:, :1, :]), hidden[:, :-1, :]], axis=1)


def build_model(num_items: int, cfg: ModelConfig, name: str | None = None) -> BERT4Rec:
    """The teacher network of ``cfg.kind`` (``"bert4rec"`` or ``"sasrec"``)."""
    cls = SASRec if cfg.kind == "sasrec" else BERT4Rec
    return cls(num_items, cfg, name=name or cfg.kind)


def serving_signature(max_len: int) -> list[tf.TensorSpec]:
    """The static ``[1, L]`` int32 input signature used for export (docs/toolchain.md)."""
    return [tf.TensorSpec([1, max_len], tf.int32, name="items")]
