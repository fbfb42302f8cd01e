"""The infilling mask syntax and the character vocabulary."""

import pytest
import torch

from diffuse.text.template import TemplateError, parse_template
from diffuse.text.vocab import CharVocab, UnknownCharactersError


def test_gaps_by_underscores_and_by_number():
    t = parse_template("ROMEO: [____] my [3]lord")
    assert t.pieces == ("ROMEO: ", 4, " my ", 3, "lord")
    assert t.masked == 7 and t.length == len("ROMEO: ") + 4 + len(" my ") + 3 + 4


def test_literal_brackets():
    t = parse_template("a [[b]] [_]")
    assert t.pieces == ("a [b] ", 1)


@pytest.mark.parametrize(
    "template, message",
    [
        ("ROMEO: [____ my lord", "unclosed '\\[' at position 7"),
        ("ROMEO] [__]", "unmatched '\\]' at position 5"),
        ("a [] b", "\\[\\] at position 2 is not a gap"),
        ("a [_x_] b", "\\[_x_\\] at position 2 is not a gap"),
        ("a [0] b", "asks for 0 characters"),
        ("a [-3] b", "is not a gap"),
        ("no gap at all", "no gap to fill"),
    ],
)
def test_syntax_errors_name_the_fault(template, message):
    with pytest.raises(TemplateError, match=message):
        parse_template(template)


def test_tokens_and_fill_round_trip():
    vocab = CharVocab.from_text("abc ")
    t = parse_template("ab [__] c")
    tokens = t.tokens(vocab)
    assert tokens.tolist() == [1, 2, 0, 4, 4, 0, 3]  # sorted: " " a b c, then the mask
    text, gaps = t.fill(torch.tensor([1, 2, 0, 3, 3, 0, 3]), vocab)
    assert text == "ab cc c" and gaps == ["cc"]


def test_unknown_characters_are_listed():
    vocab = CharVocab.from_text("abc")
    with pytest.raises(UnknownCharactersError, match=r"2 character\(s\) .*'x', 'é'"):
        vocab.encode("abxéx")
    with pytest.raises(UnknownCharactersError, match="'z'"):
        parse_template("z[_]").tokens(vocab)
    assert vocab.decode(vocab.encode("cab")) == "cab"
    assert vocab.decode([0, vocab.mask_id]) == "a_"
