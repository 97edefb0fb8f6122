"""The text token cache gives exactly the in-memory path's vocabulary, ids, names and errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnngen import cache, corpus_cache, textscan
from rnngen.codec import TextCodec
from rnngen.corpus_cache import open_text_corpus
from rnngen.textscan import decoded_pieces, piece_text
from rnngen.data import decode_text, load_text
from rnngen.errors import RnngenError

MIXED = "Ça va?\r\nSchöne Grüße — “quotes” 東京は雨です。\rline 🎵🎹 end\r\n\r\r\n"


def in_memory(sources, codec=None, what="the corpus"):
    text, names = load_text([str(s) for s in sources])
    codec = codec or TextCodec.fit(text)
    return codec, codec.encode_corpus(text, what), names


def cached(sources, cache, **kw):
    return open_text_corpus([str(s) for s in sources], cache_dir=cache, **kw)


def same(a, b) -> None:
    assert a[0].chars == b[0].chars
    assert a[1].dtype == b[1].dtype and torch.equal(a[1], b[1])
    assert a[2] == b[2]


def decoded(path: Path, chunk: int) -> str:
    return "".join(piece_text(p) for pieces in decoded_pieces(path, chunk) for p in pieces)


# -- decoding in chunks ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
@pytest.mark.parametrize("dense", [False, True])
def test_chunks_decode_as_the_whole_file(tmp_path, monkeypatch, chunk, dense):
    # dense: every chunk with two non-ASCII runs is decoded whole (the path for non-Latin text)
    monkeypatch.setattr(textscan, "_RUNS_PER_BYTE", 0.0 if dense else 1.0)
    monkeypatch.setattr(textscan, "_DENSE_SHARE", 0.0 if dense else 2.0)
    path = tmp_path / "t.txt"
    for raw in [MIXED.encode(), b"\xef\xbb\xbf" + MIXED.encode(), b"a\r", b"\r\n", b"\xef\xbb\xbf", b"",
                "é\r\nè".encode(), ("x" * 30 + "\r" * 5 + "\n" + "ÿ" * 9).encode()]:
        path.write_bytes(raw)
        assert decoded(path, chunk) == decode_text(raw, "t"), raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\xc3\xa9", b"\xe6\x9d\xb1", b"\xf0\x9f\x8e\xb5",
                                     b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\x00"]),
                    max_size=24).map(b"".join),
       chunk=st.integers(1, 9), dense=st.booleans())
def test_chunked_decoding_matches_decode_text_on_any_bytes(tmp_path, monkeypatch, raw, chunk, dense):
    monkeypatch.setattr(textscan, "_RUNS_PER_BYTE", 0.0 if dense else 1.0)
    monkeypatch.setattr(textscan, "_DENSE_SHARE", 0.0 if dense else 2.0)
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    try:
        expected = decode_text(raw, str(path))
    except RnngenError as e:
        with pytest.raises(RnngenError) as got:
            decoded(path, chunk)
        assert str(got.value) == str(e)
    else:
        assert decoded(path, chunk) == expected


# -- the cache --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [3, 8, 1 << 20])
def test_cached_ids_equal_in_memory_ids(tmp_path, chunk):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"\xef\xbb\xbf" + MIXED.encode() + b"\r")  # ends with CR, b starts with LF
    b.write_bytes(b"\nplain ascii\r\n" * 20)
    got = cached([a, b], tmp_path / "cache", chunk_bytes=chunk)
    same(got, in_memory([a, b]))
    again = cached([a, b], tmp_path / "cache", chunk_bytes=chunk)  # from the cache this time
    same(again, got)


def test_a_large_vocabulary_gives_int16_ids(tmp_path):
    path = tmp_path / "cjk.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(300)) + "abc\n", encoding="utf-8")
    got = cached([path], tmp_path / "cache", chunk_bytes=16)
    assert got[1].dtype == torch.int16
    same(got, in_memory([path]))


def test_folders_skip_what_is_not_text_with_the_same_lines(tmp_path, capfd):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_text("hello\n", encoding="utf-8")
    (folder / "b.bin").write_bytes(b"abc\x00def")
    (folder / "c.txt").write_bytes(b"good start " * 3 + b"\xff bad later")
    (folder / "d.txt").write_bytes(b"")
    expected = in_memory([folder])
    want = capfd.readouterr().err
    got = cached([folder], tmp_path / "cache", chunk_bytes=4)
    same(got, expected)
    assert capfd.readouterr().err == want and want.count("skipped:") == 2
    cached([folder], tmp_path / "cache", chunk_bytes=4)
    assert capfd.readouterr().err == want  # a cache hit lists them again


def test_a_named_file_that_is_not_text_fails_as_load_text_does(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("fine é ".encode() * 4 + b"\xc3(")
    with pytest.raises(RnngenError) as want:
        in_memory([bad])
    with pytest.raises(RnngenError) as got:
        cached([bad], tmp_path / "cache", chunk_bytes=5)
    assert str(got.value) == str(want.value)


def test_a_changed_source_is_rebuilt_even_with_the_same_size_and_mtime(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abcabc\n", encoding="utf-8")
    first = cached([path], tmp_path / "cache")
    st = path.stat()
    path.write_text("xyzxyz\n", encoding="utf-8")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    second = cached([path], tmp_path / "cache")
    assert second[0].chars != first[0].chars
    same(second, in_memory([path]))
    assert len(list((tmp_path / "cache" / "text").glob("*.ids"))) == 1  # the stale build is gone


def test_an_unchanged_source_reuses_the_cache(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text("abcabc\n" * 10, encoding="utf-8")
    cached([path], tmp_path / "cache")

    def no_build(*args, **kw):
        raise AssertionError("rebuilt an entry that was valid")

    monkeypatch.setattr(corpus_cache, "_build", no_build)
    same(cached([path], tmp_path / "cache"), in_memory([path]))


def test_a_given_codec_encodes_with_its_vocabulary(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("bab\n", encoding="utf-8")
    codec = TextCodec("\nabcé")
    same(cached([path], tmp_path / "cache", codec=codec), in_memory([path], codec))


@pytest.mark.parametrize("chunk", [2, 1 << 20])
def test_unseen_characters_with_a_given_codec_fail_as_check_says(tmp_path, chunk):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("abc" * 5 + "Zé🎵", encoding="utf-8")
    b.write_text("aQéZ東", encoding="utf-8")
    codec = TextCodec("abc")
    with pytest.raises(RnngenError) as want:
        in_memory([a, b], codec, "the evaluation text")
    with pytest.raises(RnngenError) as got:
        cached([a, b], tmp_path / "cache", codec=codec, what="the evaluation text", chunk_bytes=chunk)
    assert str(got.value) == str(want.value)
    assert "5 character(s)" in str(got.value)


def test_empty_input_fails_as_load_text_does(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(RnngenError) as want:
        in_memory([path])
    with pytest.raises(RnngenError) as got:
        cached([path], tmp_path / "cache")
    assert str(got.value) == str(want.value)


def test_an_interrupted_build_leaves_no_valid_looking_entry(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text("abc\n" * 100, encoding="utf-8")

    def killed(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_cache, "write_json", killed)  # after the token file, before the metadata
    with pytest.raises(KeyboardInterrupt):
        cached([path], tmp_path / "cache", chunk_bytes=8)
    folder = tmp_path / "cache" / "text"
    assert not list(folder.glob("*.json"))
    monkeypatch.undo()
    same(cached([path], tmp_path / "cache"), in_memory([path]))


def test_a_build_killed_mid_way_leaves_only_a_temporary_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abc\n" * 100_000, encoding="utf-8")
    code = ("import os, sys, rnngen.corpus_cache as c\n"
            "real = c.encode_files\n"
            "def dies(files, explicit, encoder, out, chunk):\n"
            "    out.write(b'x' * 1000); out.flush(); os._exit(9)\n"
            "c.encode_files = dies\n"
            f"c.open_text_corpus([{str(path)!r}], cache_dir={str(tmp_path / 'cache')!r})\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    folder = tmp_path / "cache" / "text"
    assert [p.name.startswith(".tmp-") for p in folder.iterdir()] == [True]
    same(cached([path], tmp_path / "cache"), in_memory([path]))


def test_ids_are_memory_mapped_and_work_with_split_and_streams(tmp_path):
    from rnngen.data import Streams, split

    path = tmp_path / "c.txt"
    path.write_text("hello world, memory mapped\n" * 400, encoding="utf-8")
    _, ids, _ = cached([path], tmp_path / "cache")
    train, val = split(ids, 0.1)
    x, y, _ = next(Streams(train, batch=4, seq_len=16).epoch(1))
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the token file is mapped, not read into memory
        assert any(line.endswith(".ids") for line in maps.read_text().splitlines())


def test_names_are_given_as_this_run_gives_them(tmp_path, monkeypatch):
    (tmp_path / "c.txt").write_text("abc\n", encoding="utf-8")
    absolute = cached([tmp_path / "c.txt"], tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    relative = open_text_corpus(["c.txt"], cache_dir=tmp_path / "cache")
    assert absolute[2] == [str(tmp_path / "c.txt")] and relative[2] == ["c.txt"]
    same(relative, in_memory(["c.txt"]))


def test_the_default_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RNNGEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_dir() == tmp_path / "xdg" / "rnngen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.default_cache_dir() == Path.home() / ".cache" / "rnngen"
    monkeypatch.setenv("RNNGEN_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.default_cache_dir() == tmp_path / "mine"


def test_the_digest_read_in_pieces_is_the_digest_of_the_blocks_bytes(tmp_path, monkeypatch):
    # Pieces that do not divide the block, files shorter than a piece, empty, and ending mid-block.
    monkeypatch.setattr(cache, "HASH_PIECE", 64)
    files = []
    for i, size in enumerate([0, 1, 63, 999, 1000, 2501]):
        f = tmp_path / f"f{i}"
        f.write_bytes(os.urandom(size))
        files.append(f)
    expected = cache.combine_digests([cache.block_digests(f.read_bytes(), 1000) for f in files])
    assert cache.content_digest(files, block=1000) == expected
    files[3].write_bytes(files[3].read_bytes()[:-1] + b"?")
    assert cache.content_digest(files, block=1000) != expected
