"""Parallel, cached MIDI reading gives exactly what serial `read_pieces` gives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from rnngen.midi import cache as midi_cache
from rnngen.errors import RnngenError
from rnngen.midi import read_pieces
from rnngen.midi.cache import parse_files, read_pieces_cached

CHORALES = Path(__file__).resolve().parents[1] / "corpora" / "bach-chorales"


@pytest.fixture
def files(tmp_path) -> list[Path]:
    """40 chorales and four damaged files among them (the kinds `read_midi` names)."""
    folder = tmp_path / "midi"
    folder.mkdir()
    out = []
    for src in sorted(CHORALES.glob("*.mid"))[:40]:
        out.append(Path(shutil.copy(src, folder / src.name)))
    (folder / "empty.mid").write_bytes(b"")
    (folder / "notes.txt").write_text("not music\n")
    (folder / "cut.mid").write_bytes(out[0].read_bytes()[:-40])
    (folder / "junk.mid").write_bytes(b"MThd" + bytes(range(200)))
    return out[:10] + [folder / "empty.mid"] + out[10:25] + [folder / "notes.txt", folder / "cut.mid"] \
        + out[25:] + [folder / "junk.mid"]


def serial(files, capsys, **kw):
    result = read_pieces(files, **kw)
    return result, capsys.readouterr().err


def test_parallel_parsing_equals_serial(files):
    assert parse_files(files, workers=2) == parse_files(files, workers=1)


@pytest.mark.parametrize("workers", [1, 2])
def test_cached_pieces_equal_serial_reading_with_the_same_skipped_lines(tmp_path, files, capsys, workers):
    (want, want_names), want_err = serial(files, capsys)
    assert want_err.count("skipped") == 4
    for _ in range(2):  # built, then from the cache
        pieces, names = read_pieces_cached(files, cache_dir=tmp_path / "cache", workers=workers)
        assert pieces == want and names == want_names
        assert capsys.readouterr().err == want_err


def test_settings_are_part_of_the_key(tmp_path, files, capsys):
    read_pieces_cached(files, cache_dir=tmp_path / "cache")
    (want, _), _ = serial(files, capsys, steps_per_quarter=4)
    assert read_pieces_cached(files, steps_per_quarter=4, cache_dir=tmp_path / "cache")[0] == want


@pytest.mark.parametrize("hash_apart", [False, True])  # hashed here, or in a process beside the notes being made
def test_a_changed_file_is_parsed_again_even_with_the_same_size_and_mtime(tmp_path, files, capsys, monkeypatch,
                                                                           hash_apart):
    monkeypatch.setattr(midi_cache, "HASH_APART_FROM", 0 if hash_apart else 10**9)
    read_pieces_cached(files, cache_dir=tmp_path / "cache")
    victim, other = files[3], files[4]
    st = victim.stat()
    data = other.read_bytes()
    if len(data) != st.st_size:  # keep the size: cut or pad the other chorale's bytes
        data = (data + b"\0" * st.st_size)[: st.st_size]
    victim.write_bytes(data)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    want, _ = serial(files, capsys)
    assert read_pieces_cached(files, cache_dir=tmp_path / "cache") == want


@pytest.mark.parametrize("hash_apart", [False, True])
def test_an_unchanged_folder_is_not_parsed_again(tmp_path, files, monkeypatch, hash_apart):
    monkeypatch.setattr(midi_cache, "HASH_APART_FROM", 0 if hash_apart else 10**9)
    first = read_pieces_cached(files, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(midi_cache, "parse_files", lambda *a, **k: pytest.fail("parsed a valid entry again"))
    assert read_pieces_cached(files, cache_dir=tmp_path / "cache") == first


def test_a_damaged_cache_file_is_rebuilt(tmp_path, files):
    first = read_pieces_cached(files, cache_dir=tmp_path / "cache")
    for entry in (tmp_path / "cache" / "midi").glob("*.pt"):
        entry.write_bytes(entry.read_bytes()[:100])
    assert read_pieces_cached(files, cache_dir=tmp_path / "cache") == first


def test_nothing_usable_fails_as_read_pieces_does(tmp_path, files, capsys):
    bad = [f for f in files if f.suffix != ".mid" or f.name in ("empty.mid", "cut.mid", "junk.mid")]
    with pytest.raises(RnngenError) as want:
        read_pieces(bad)
    with pytest.raises(RnngenError) as got:
        read_pieces_cached(bad, cache_dir=tmp_path / "cache")
    assert str(got.value) == str(want.value)


def test_names_are_the_files_as_given_this_time(tmp_path, files, monkeypatch):
    monkeypatch.chdir(files[0].parent)
    given = [Path(f.name) for f in files]
    _, names = read_pieces_cached(given, cache_dir=tmp_path / "cache")
    assert names[0] == files[0].name  # relative, as given
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(midi_cache, "parse_files", lambda *a, **k: pytest.fail("parsed a valid entry again"))
    _, again = read_pieces_cached(files, cache_dir=tmp_path / "cache")  # the same files, from elsewhere
    assert again == [str(f) for f in files if f.name in names] and len(again) == len(names)


def test_an_entry_without_the_indices_of_its_files_is_read_again_when_some_were_skipped(tmp_path, files, monkeypatch):
    first = read_pieces_cached(files, cache_dir=tmp_path / "cache")
    [entry] = (tmp_path / "cache").rglob("*.pt")
    old = torch.load(entry, weights_only=True)
    del old["read"]  # as an entry from before they were kept
    torch.save(old, entry)
    parsed = []
    monkeypatch.setattr(midi_cache, "parse_files", lambda *a, **k: parsed.append(1) or parse_files(*a, **k))
    assert read_pieces_cached(files, cache_dir=tmp_path / "cache") == first and parsed == [1]
