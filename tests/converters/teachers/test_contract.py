"""teacher.toml parsing and the vocabulary mapping (TF-free, fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgerec.converters.teachers.contract import load_contract
from edgerec.converters.teachers.vocab_map import build_mapping
from edgerec.errors import InputError
from tests.converters.teachers.conftest import write_descriptor, write_items

ONNX = """kind = "onnx"
path = "m.onnx"

[input]
name = "item_seq"
max_len = 24
padding = "right"

[vocabulary]
path = "items.json"
"""


def test_a_full_descriptor_loads(tmp_path):
    text = ONNX + '\n[[extra_inputs]]\nname = "item_seq_len"\nvalue = "length"\n'
    c = load_contract(write_descriptor(tmp_path, text))
    assert c.kind == "onnx" and c.input.max_len == 24 and c.input.padding == "right"
    assert c.model_path == tmp_path / "m.onnx"
    assert [e.name for e in c.extra_inputs] == ["item_seq_len"]
    assert c.to_json()["extra_inputs"] == [
        {"name": "item_seq_len", "value": "length", "dtype": "int64"}
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('padding = "right"', 'padding = "rigth"'), r"teacher.toml:7: input.padding must be"),
        (("max_len = 24", 'max_len = "24"'), r"teacher.toml:6: input.max_len must be int"),
        (("[vocabulary]", "[vocabulary]\nsize = 3"), r"teacher.toml:\d+: unknown key 'size'"),
        (('kind = "onnx"', 'kind = "pytorch"'), r"kind must be one of edgerec, keras"),
        (('path = "items.json"', 'path = ""'), r"vocabulary.path is required"),
        (("max_len = 24", "max_len = 0"), r"input.max_len must be >= 1"),
    ],
)
def test_descriptor_mistakes_name_file_line_and_key(tmp_path, edit, message):
    path = write_descriptor(tmp_path, ONNX.replace(*edit))
    with pytest.raises(InputError, match=message):
        load_contract(path)


def test_remote_needs_url_and_model(tmp_path):
    path = write_descriptor(tmp_path, 'kind = "remote"\n[vocabulary]\npath = "v.json"\n')
    with pytest.raises(InputError, match="remote.url and remote.model are required"):
        load_contract(path)


def _contract(tmp_path, vocab_lines: str = "", **input_keys):
    text = ONNX.replace('[vocabulary]\npath = "items.json"\n', "")
    for key, value in input_keys.items():
        text = text.replace("[input]\n", f"[input]\n{key} = {json.dumps(value)}\n")
    text += '[vocabulary]\npath = "items.json"\n' + vocab_lines
    return load_contract(write_descriptor(tmp_path, text))


def test_mapping_joins_on_raw_ids_and_reports_both_sides(tmp_path, walk_split):
    items = list(walk_split.vocab.item_ids)
    tokens = ["[PAD]", *reversed(items[1:]), "only-teacher"]
    write_items(tmp_path, tokens)
    m = build_mapping(_contract(tmp_path), walk_split.vocab)
    assert m.report["shared"] == len(items) - 1
    assert m.report["data_only"] == 1 and m.report["teacher_only"] == 1
    assert m.data_to_teacher[1] == -1  # the first data item is not in the teacher
    d = 5
    t = m.data_to_teacher[d]
    assert tokens[t] == items[d - 1] and m.column_to_data[t] == d
    assert m.column_to_data[len(tokens) - 1] == 0  # the teacher-only item is dropped


@pytest.mark.parametrize(
    ("tokens", "extra", "message"),
    [
        (["[PAD]", "a", "b", "a"], "", r"duplicate id 'a' at teacher indices 1 and 3"),
        (["a", "b"], "", r"reserved token\(s\) \['\[PAD\]'\] .* are not in the vocabulary"),
        (["a", "[PAD]"], "", r"input.pad_id 0 must be the index of a reserved token"),
        (["[PAD]", "x1", "x2"], "", r"only 0 of the data's 100 items"),
    ],
)
def test_bad_vocabularies_are_refused(tmp_path, walk_split, tokens, extra, message):
    write_items(tmp_path, tokens)
    with pytest.raises(InputError, match=message):
        build_mapping(_contract(tmp_path, extra), walk_split.vocab)


def test_mask_needs_a_reserved_mask_token(tmp_path, walk_split):
    write_items(tmp_path, ["[PAD]", *walk_split.vocab.item_ids])
    with pytest.raises(InputError, match=r"needs a reserved \[MASK\] token"):
        build_mapping(_contract(tmp_path, mask=True), walk_split.vocab)
    write_items(tmp_path, ["[PAD]", *walk_split.vocab.item_ids, "[MASK]"])
    m = build_mapping(
        _contract(tmp_path, 'reserved = ["[PAD]", "[MASK]"]\n', mask=True), walk_split.vocab
    )
    assert m.mask_id == walk_split.vocab.num_items + 1


def test_csv_and_recbole_vocabularies(tmp_path, walk_split):
    items = list(walk_split.vocab.item_ids)
    rows = ["index,item_id", "0,[PAD]"] + [f"{i},{item}" for i, item in enumerate(items, 1)]
    (tmp_path / "v.csv").write_text("\n".join(reversed(rows[1:])) + "\n")  # any row order
    text = ONNX.replace('path = "items.json"', 'path = "v.csv"\nformat = "csv"')
    m = build_mapping(load_contract(write_descriptor(tmp_path, text)), walk_split.vocab)
    assert m.report["shared"] == len(items)
    np.save(tmp_path / "tokens.npy", np.array(["[PAD]", *items]))
    text = ONNX.replace('path = "items.json"', 'path = "tokens.npy"\nformat = "recbole"')
    m = build_mapping(load_contract(write_descriptor(tmp_path, text)), walk_split.vocab)
    assert m.report["shared"] == len(items)
    (tmp_path / "f2i.json").write_text(json.dumps({"user_id": ["[PAD]"]}))
    text = ONNX.replace('path = "items.json"', 'path = "f2i.json"\nformat = "recbole"')
    with pytest.raises(InputError, match="has no field 'item_id'"):
        build_mapping(load_contract(write_descriptor(tmp_path, text)), walk_split.vocab)
    (tmp_path / "gap.csv").write_text("0,[PAD]\n2,i1\n")
    text = ONNX.replace('path = "items.json"', 'path = "gap.csv"\nformat = "csv"')
    with pytest.raises(InputError, match="without gaps"):
        build_mapping(load_contract(write_descriptor(tmp_path, text)), walk_split.vocab)


def test_kind_edgerec_is_todays_teacher_directory(tmp_path, walk_split):
    from edgerec.converters.pipeline import prepare
    from tests.converters.conftest import fake_teacher

    fake_teacher(tmp_path / "runs" / "teacher", walk_split.vocab)
    descriptor = write_descriptor(tmp_path, 'kind = "edgerec"\npath = "runs/teacher"\n')
    from tests.converters.tiny import tiny_config

    prepared = prepare(descriptor, walk_split, tmp_path / "out", tiny_config())
    assert prepared.teacher_dir == tmp_path / "runs" / "teacher"
    assert prepared.contract.kind == "edgerec" and not prepared.external


def test_external_teacher_prepare_checks_the_student_settings(tmp_path, walk_split):
    from edgerec.converters.pipeline import prepare
    from tests.converters.tiny import tiny_config

    write_items(tmp_path, ["[PAD]", *walk_split.vocab.item_ids])
    descriptor = write_descriptor(tmp_path, ONNX)
    prepared = prepare(descriptor, walk_split, tmp_path / "out", tiny_config())
    assert prepared.external and prepared.student_cfg.max_len == 25  # 24 history + [MASK]
    with pytest.raises(InputError, match="init_from_teacher needs edgerec's own teacher"):
        prepare(
            descriptor, walk_split, tmp_path / "o2", tiny_config(distil={"init_from_teacher": True})
        )
    with pytest.raises(InputError, match="teacher descriptor not found"):
        prepare(tmp_path / "missing.toml", walk_split, tmp_path / "o3")
