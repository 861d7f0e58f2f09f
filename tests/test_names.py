"""The names dataset: the shipped list, files by path, the vocabulary, the examples and the splits."""

from __future__ import annotations

import random
import re
from importlib import resources

import pytest
import torch

from gradcheck_kit.makemore.names import build_dataset, build_vocabulary, load_dataset, load_words, split_words


def test_shipped_names_are_thousands_of_lowercase_words():
    words = load_words()
    assert len(words) > 3000
    assert len(set(words)) == len(words)
    assert all(re.fullmatch("[a-z]+", w) for w in words)


def test_the_shipped_names_come_with_their_licence():
    data = resources.files("gradcheck_kit.makemore").joinpath("data")
    licence = data.joinpath("NAMES-LICENSE.txt").read_text(encoding="utf-8")
    assert "public domain" in licence
    assert "Census" in licence


def test_vocabulary_puts_the_end_token_at_zero_and_letters_in_order():
    stoi, itos = build_vocabulary(load_words())
    assert stoi["."] == 0
    assert stoi["a"] == 1 and stoi["z"] == 26
    assert len(itos) == 27
    assert all(itos[i] == s for s, i in stoi.items())


def test_build_dataset_slides_the_context_over_the_name_and_its_end_token():
    stoi, _ = build_vocabulary(["emma"])
    X, Y = build_dataset(["emma"], block_size=3, stoi=stoi)
    e, m, a = stoi["e"], stoi["m"], stoi["a"]
    assert X.tolist() == [[0, 0, 0], [0, 0, e], [0, e, m], [e, m, m], [m, m, a]]
    assert Y.tolist() == [e, m, m, a, 0]
    assert X.dtype == Y.dtype == torch.long


def test_build_dataset_of_no_words_has_the_right_shape():
    X, Y = build_dataset([], block_size=4, stoi={".": 0})
    assert X.shape == (0, 4) and Y.shape == (0,)


def test_split_is_the_notebooks_seed_42_shuffle_cut_80_10_10():
    words = load_words()
    state = random.getstate()
    try:
        shuffled = list(words)
        random.seed(42)
        random.shuffle(shuffled)
    finally:
        random.setstate(state)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    assert split_words(words) == (shuffled[:n1], shuffled[n1:n2], shuffled[n2:])


def test_split_leaves_the_global_random_state_alone():
    state = random.getstate()
    split_words(["ab", "cd", "ef"])
    assert random.getstate() == state


def test_dataset_splits_hold_one_example_per_character_and_end_token():
    data = load_dataset()
    train, dev, test = split_words(load_words())
    for words, (X, Y) in zip(
        (train, dev, test), (data.split("train"), data.split("dev"), data.split("test")), strict=True
    ):
        assert len(X) == len(Y) == sum(len(w) + 1 for w in words)
    assert data.vocab_size == 27 and data.block_size == 3


def test_unknown_split_names_the_choices():
    with pytest.raises(KeyError, match="train, dev or test"):
        load_dataset(limit=20).split("validation")


def test_a_names_file_is_read_by_path_with_blank_lines_skipped(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("emma\n\nolivia\r\nava\n", encoding="utf-8")
    assert load_words(path) == ["emma", "olivia", "ava"]
    data = load_dataset(path)
    assert data.source == str(path)
    assert sorted(data.stoi) == [".", "a", "e", "i", "l", "m", "o", "v"]


def test_limit_keeps_the_first_names_of_the_file():
    data = load_dataset(limit=100)
    total = len(data.Xtr) + len(data.Xdev) + len(data.Xte)
    assert total == sum(len(w) + 1 for w in load_words()[:100])


@pytest.mark.parametrize("bad", ["anne.marie", "mary ann"])
def test_a_line_that_is_not_one_name_is_rejected_with_its_line_number(tmp_path, bad):
    path = tmp_path / "names.txt"
    path.write_text(f"emma\n{bad}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"names.txt:2: .* is not one name"):
        load_words(path)


def test_an_empty_names_file_is_rejected(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no names"):
        load_words(path)


def test_a_missing_names_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_words(tmp_path / "nowhere.txt")
