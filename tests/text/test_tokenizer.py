import subprocess
import sys

import pytest

from nlpseq.errors import ConfigError
from nlpseq.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TextTokenizer

TEXTS = ["The film is great .", "A dull , lifeless film", "great great film", "Ünïcödé text — with dashes"]


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_json_round_trip_gives_identical_ids(kind):
    tok = TextTokenizer.train(TEXTS, kind=kind, vocab_size=60 if kind == "bpe" else 1000, min_frequency=1)
    again = TextTokenizer.from_json(tok.to_json())
    assert again.kind == kind and again.vocab_size == tok.vocab_size
    for text in TEXTS + ["never seen words", ""]:
        assert again.encode(text) == tok.encode(text)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)


def test_char_and_bpe_decode_restore_text():
    char = TextTokenizer.train(TEXTS, kind="char")
    assert char.decode(char.encode("great film .")) == "great film ."
    bpe = TextTokenizer.train(TEXTS * 5, kind="bpe", vocab_size=80)
    assert bpe.decode(bpe.encode("The film is great .")) == "The film is great ."


def test_word_level_options():
    tok = TextTokenizer.train(["a a a b b c"], kind="word", min_frequency=2, lowercase=True)
    assert tok.encode("A b c") == [tok.hf.token_to_id("a"), tok.hf.token_to_id("b"), UNK_ID]
    assert tok.vocab_size == 6  # 4 specials + a + b
    assert TextTokenizer.train(["x y z w"], vocab_size=6).vocab_size == 6
    assert tok.encode("") == [] and tok.encode("a", add_bos=True, add_eos=True)[::2] == [BOS_ID, EOS_ID]


def test_bad_options():
    with pytest.raises(ConfigError, match="kind"):
        TextTokenizer.train(TEXTS, kind="sentencepiece")
    with pytest.raises(ConfigError, match="vocab_size"):
        TextTokenizer.train(TEXTS, vocab_size=2)


SCRIPT = """
from nlpseq.text.tokenizer import TextTokenizer
texts = [" ".join(f"w{(i * 7 + j) % 50}" for j in range(8)) for i in range(200)]
print(TextTokenizer.train(texts, kind="{kind}", vocab_size=40).to_json())
"""


@pytest.mark.parametrize("kind", ["word", "char"])
def test_vocabulary_is_identical_across_processes(kind):
    # ties in frequency must not be broken by hash order: DDP workers and resumed runs rely on it
    outs = {subprocess.run([sys.executable, "-c", SCRIPT.replace("{kind}", kind)], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}, check=True).stdout for seed in (1, 2, 3)}
    assert len(outs) == 1


@pytest.mark.parametrize("lowercase,min_frequency,vocab_size", [(False, 1, 30000), (True, 2, 30000), (False, 1, 9)])
def test_word_vocabulary_from_counts_is_the_trained_one(lowercase, min_frequency, vocab_size):
    # the NER datamodule counts distinct words in one pass and builds the vocabulary from the counts
    from collections import Counter

    sentences = [["The", "cat", "sat", "on", "the", "mat"], ["THE", "Cat", "ran"], ["Ünïcode", "cat", "the"],
                 ["mat", "mat", "sat"]]
    trained = TextTokenizer.train(sentences, kind="word", pretokenized=True, lowercase=lowercase,
                                  min_frequency=min_frequency, vocab_size=vocab_size)
    counted = TextTokenizer.from_word_counts(Counter(w for s in sentences for w in s), lowercase=lowercase,
                                             min_frequency=min_frequency, vocab_size=vocab_size)
    assert counted.to_json() == trained.to_json()
    assert len(trained.hf.get_vocab()) > 4
