"""Every JSON file a user hands in (encodings file, QuantizationConfig file, eval
scores file) is read strictly: a key twice in one object, or nesting past Python's
recursion limit, is refused naming the file (and the key), never a silent "last
one wins" or a bare RecursionError."""

import json

import pytest

from mct_logger.compression.eval_scores import EvalScores
from mct_logger.quantization.config import QuantizationConfig
from mct_logger.quantization.encodings_file import load_encodings

ENCODINGS = '{"activation_encodings": {"img": [{"bitwidth": 8}], "img": [{"bitwidth": 4}]}}'
CONFIG = ('{"format": "mct_logger.QuantizationConfig", "version": 1, '
          '"config": {"weight_bits": 8, "weight_bits": 4}}')
SCORES = ('{"format": "mct_logger.compression.eval_scores", "version": 1, '
          '"scores": {"conv": {"0.5": 0.9, "0.5": 0.1}}}')
READERS = {
    "encodings_file": (load_encodings, ENCODINGS, "img"),
    "config file": (QuantizationConfig.from_json, CONFIG, "weight_bits"),
    "eval_scores_file": (lambda p: EvalScores.open(p, {}), SCORES, "0.5"),
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_a_key_twice_is_refused_naming_the_file_and_the_key(kind, tmp_path):
    read, text, key = READERS[kind]
    path = tmp_path / "dup.json"
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        read(str(path))
    assert str(path) in str(raised.value) and repr(key) in str(raised.value), raised.value


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_nesting_past_the_recursion_limit_is_refused_naming_the_file(kind, opener, tmp_path):
    read = READERS[kind][0]
    path = tmp_path / "deep.json"
    closer = "]" if opener == "[" else "}"
    path.write_text(opener * 200_000 + "1" + closer * 200_000)
    with pytest.raises(ValueError, match="nested too deeply") as raised:
        read(str(path))
    assert str(path) in str(raised.value)


def test_a_well_formed_file_still_reads(tmp_path):
    path = tmp_path / "c.json"
    QuantizationConfig(weight_bits=4).to_json(path)
    assert QuantizationConfig.from_json(path).weight_bits == 4
    json.loads(path.read_text())  # plain JSON for every other tool
