import pytest
import torch

from rnngen.codec import TextCodec, codec_from_dict
from rnngen.data import read_text
from rnngen.errors import RnngenError


@pytest.mark.parametrize("text", [
    "To be, or not to be: that is the question.\n",
    "Ça va? Schöne Grüße, señor. 東京は雨です。 emoji: 🎵🎹 and ZWJ 👩‍💻\n",
])
def test_round_trip(text):
    codec = TextCodec.fit(text)
    ids = codec.encode(text)
    assert len(ids) == len(text)  # one token per code point, not per byte
    assert codec.decode(ids) == text
    assert codec.encode_corpus(text).tolist() == ids
    assert codec_from_dict(codec.to_dict()).decode(ids) == text


def test_vocabulary_is_distinct_code_points():
    codec = TextCodec.fit("abcab🎵a")
    assert codec.chars == ["a", "b", "c", "🎵"]


def test_compact_ids_for_large_vocabularies():
    text = "".join(chr(0x4E00 + i) for i in range(300))
    codec = TextCodec.fit(text)
    ids = codec.encode_corpus(text)
    assert ids.dtype == torch.int16 and ids.max().item() == 299


def test_unknown_characters_are_named():
    codec = TextCodec.fit("hello")
    with pytest.raises(RnngenError, match=r"2 character\(s\).*'z'.*'é'"):
        codec.encode("hezlé")
    with pytest.raises(RnngenError, match="'x'"):
        codec.encode_corpus("hexllo")


def test_windows_newlines_and_bom(tmp_path):
    path = tmp_path / "dos.txt"
    path.write_bytes("\ufeffline one\r\nline two\r\n".encode("utf-8"))
    assert read_text(path) == "line one\nline two\n"


def test_binary_and_non_utf8_are_refused(tmp_path):
    binary = tmp_path / "a.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(RnngenError, match="binary"):
        read_text(binary)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(RnngenError, match="not UTF-8"):
        read_text(latin)


def test_large_corpora_are_converted_in_chunks(monkeypatch):
    import rnngen.codec as codec_module

    monkeypatch.setattr(codec_module, "CHUNK", 7)  # many chunk boundaries, some inside multi-byte text
    text = "naïve café 東京 🎵 " * 20
    codec = TextCodec.fit(text)
    assert codec.chars == sorted(set(text))
    assert codec.encode_corpus(text).tolist() == codec.encode(text)
    with pytest.raises(RnngenError, match="'Z'"):
        codec.encode_corpus(text + "Z")
