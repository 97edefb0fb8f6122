"""Audio rendering: a real synthesizer and the packaged General MIDI SoundFont on MIDI files built here
with mido; the errors without the optional packages. No network, no SoundFont from outside the packages.

The tests that render are skipped when the `audio` extra is not installed; the ones that check the
error without it always run.
"""

from __future__ import annotations

import io
import subprocess
import sys
import wave
from pathlib import Path

import mido
import pytest

from rnngen import audio
from rnngen.errors import RnngenError

TPB = 480


def midi(notes, program: int = 0, channel: int = 0, qpm: float = 120.0, tpb: int = TPB) -> bytes:
    """A type 0 file: `notes` as (start beat, beats, pitch) on one channel with one program."""
    events = []
    for start, beats, pitch in notes:
        events.append((round(start * tpb), 1, pitch))
        events.append((round((start + beats) * tpb), 0, pitch))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm), time=0),
                            mido.Message("program_change", channel=channel, program=program, time=0)])
    now = 0
    for tick, on, pitch in events:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, channel=channel, note=pitch, velocity=100 if on else 0, time=tick - now))
        now = tick
    mid = mido.MidiFile(type=0, ticks_per_beat=tpb)
    mid.tracks.append(track)
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()


CHORDS = [(b, 1, p) for b in range(4) for p in (60 + b, 64 + b, 67 + b)]  # 4 beats of rising triads
DRUMS = [(b / 2, 0.5, p) for b, p in enumerate([36, 42, 38, 42, 36, 42, 38, 49])]  # kick, hats, snare, crash


# --------------------------------------------------------------------------------------------------
# without the extra (always run)


def block(monkeypatch, *modules: str) -> None:
    """Make `import module` fail as it does when the package is not installed."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_render_without_the_extra_says_what_to_install(monkeypatch):
    block(monkeypatch, "midirenderer")
    with pytest.raises(RnngenError) as e:
        audio.render(midi(CHORDS))
    assert str(e.value) == audio.INSTALL_HINT
    assert "\n" not in str(e.value) and 'pip install "rnngen[audio]"' in str(e.value)


def test_default_soundfont_without_pretty_midi_says_what_to_install(monkeypatch):
    monkeypatch.delenv(audio.SOUNDFONT_ENV, raising=False)
    block(monkeypatch, "pretty_midi")
    with pytest.raises(RnngenError, match=r"rnngen\[audio\]"):
        audio.resolve_soundfont()


def test_flac_without_soundfile_says_what_to_install(monkeypatch, tmp_path):
    np = pytest.importorskip("numpy")
    block(monkeypatch, "soundfile")
    with pytest.raises(RnngenError, match=r"rnngen\[audio\]"):
        audio.write_audio(tmp_path / "a.flac", audio.Audio(np.zeros((10, 2), dtype=np.int16), 48000))
    assert not list(tmp_path.iterdir())


def test_import_needs_no_optional_package():
    """`import rnngen.audio` must work on a plain install: the CLI imports it for --help."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('numpy', 'midirenderer', 'pretty_midi', 'soundfile'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import rnngen.audio\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_unknown_extension_fails_before_rendering(tmp_path, monkeypatch):
    block(monkeypatch, "midirenderer")  # rendering would fail differently: the check comes first
    with pytest.raises(RnngenError, match=r"cannot write \.mp3: name the output \.wav or \.flac"):
        audio.render_file(midi(CHORDS), tmp_path / "out.mp3")


def test_not_midi_is_one_line():
    with pytest.raises(RnngenError, match="not a MIDI file"):
        audio.render(b"RIFF....WAVEfmt ")


# --------------------------------------------------------------------------------------------------
# the SoundFont


def test_soundfont_resolution_order(monkeypatch, tmp_path):
    pytest.importorskip("pretty_midi")
    default = audio.resolve_soundfont()
    assert default.name == "TimGM6mb.sf2" and default.stat().st_size > 1_000_000
    copy = tmp_path / "mine.sf2"
    copy.write_bytes(default.read_bytes())
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(copy))
    assert audio.resolve_soundfont() == copy  # the variable beats the default
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    assert audio.resolve_soundfont(default) == default  # the argument beats the variable
    with pytest.raises(RnngenError, match=r"\$RNNGEN_SOUNDFONT .*missing\.sf2"):
        audio.resolve_soundfont()


def test_bad_soundfont_is_one_line(tmp_path):
    missing = tmp_path / "nope.sf2"
    with pytest.raises(RnngenError, match="cannot read the soundfont .*nope.sf2"):
        audio.resolve_soundfont(missing)
    text = tmp_path / "notes.sf2"
    text.write_text("not a soundfont")
    with pytest.raises(RnngenError, match="is not a SoundFont 2 file") as e:
        audio.resolve_soundfont(text)
    assert "\n" not in str(e.value)


def test_damaged_soundfont_is_one_line(tmp_path):
    pytest.importorskip("midirenderer")
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00sfbk" + b"\x00" * 8)  # the right header, nothing inside
    with pytest.raises(RnngenError, match="cannot render with bad.sf2: SoundFont error") as e:
        audio.render(midi(CHORDS), soundfont=bad)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------------
# rendering with the real synthesizer


@pytest.fixture
def synth(monkeypatch):
    """Skip without the extra; always use the packaged SoundFont, whatever the environment says."""
    pytest.importorskip("midirenderer")
    pytest.importorskip("pretty_midi")
    monkeypatch.delenv(audio.SOUNDFONT_ENV, raising=False)
    return audio


def rms(samples) -> float:
    import numpy as np

    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def spectrum(samples, rate: int):
    """(frequencies, magnitudes) of the mono mix."""
    import numpy as np

    mono = samples.astype(np.float64).mean(axis=1)
    return np.fft.rfftfreq(len(mono), 1 / rate), np.abs(np.fft.rfft(mono * np.hanning(len(mono))))


def centroid(samples, rate: int) -> float:
    f, s = spectrum(samples, rate)
    return float((f * s).sum() / s.sum())


def test_render_file_is_a_real_wav_of_the_right_length(synth, tmp_path):
    source = tmp_path / "chords.mid"
    source.write_bytes(midi(CHORDS, qpm=90))  # 4 beats at 90 qpm: 2.667 s
    out = synth.render_file(source, tmp_path / "chords.wav")
    with wave.open(str(tmp_path / "chords.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48000, 2, 2)
        frames = w.getnframes()
    assert frames == out.frames
    piece = 4 * 60 / 90
    assert piece <= out.seconds <= piece + 3
    assert rms(out.samples) > 100  # 16-bit scale; silence is 0, this piece measures about 650
    assert rms(out.samples[: 48000 * 2]) > 10 * rms(out.samples[-4800:])  # the tail fades out


def test_tempo_sets_the_length(synth):
    slow = synth.render(midi(CHORDS, qpm=60), tail=0)
    fast = synth.render(midi(CHORDS, qpm=120), tail=0)
    assert slow.seconds == pytest.approx(4.0, abs=0.05)
    assert fast.seconds == pytest.approx(2.0, abs=0.05)


def test_notes_sound_at_their_pitch_at_any_rate(synth):
    """A4 (note 69) on the piano peaks at 440 Hz, both at the synthesizer's rate and resampled."""
    piece = midi([(0, 2, 69)])
    for rate in (48000, 44100, 22050):
        a = synth.render(piece, sample_rate=rate, tail=0)
        assert a.rate == rate and a.channels == 2
        assert a.frames == pytest.approx(rate, rel=0.01)  # 2 beats at 120 qpm: 1 s
        f, s = spectrum(a.samples, rate)
        assert abs(f[s.argmax()] - 440) < 3, (rate, f[s.argmax()])


def test_programs_sound_different(synth):
    piano = synth.render(midi(CHORDS, program=0)).samples
    violin = synth.render(midi(CHORDS, program=40)).samples
    flute = synth.render(midi(CHORDS, program=73)).samples
    n = min(len(piano), len(violin), len(flute))
    for other in (violin, flute):
        assert rms(piano[:n] - other[:n]) > 0.5 * rms(piano[:n])
    assert abs(centroid(violin, 48000) - centroid(flute, 48000)) > 100  # measured: about 1,800 against 1,150 Hz


def test_channel_10_is_the_drum_kit(synth):
    """The same keys on channel 10 play drums (noisy, bright), on channel 1 a piano (pitched, low)."""
    drums = synth.render(midi(DRUMS, channel=9)).samples
    piano = synth.render(midi(DRUMS, channel=0)).samples
    assert rms(drums) > 100
    assert centroid(drums, 48000) > 2 * centroid(piano, 48000)  # measured: about 4,300 Hz against 800


def test_wav_and_flac_hold_the_same_samples(synth, tmp_path):
    soundfile = pytest.importorskip("soundfile")
    import numpy as np

    a = synth.render(midi(CHORDS), tail=0.5)
    synth.write_audio(tmp_path / "a.wav", a)
    synth.write_audio(tmp_path / "a.FLAC", a)
    wav, wav_rate = soundfile.read(tmp_path / "a.wav", dtype="int16")
    flac, flac_rate = soundfile.read(tmp_path / "a.FLAC", dtype="int16")
    assert wav_rate == flac_rate == 48000
    assert np.array_equal(wav, a.samples) and np.array_equal(flac, a.samples)
    assert (tmp_path / "a.FLAC").stat().st_size < (tmp_path / "a.wav").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.FLAC", "a.wav"]  # no temporary left


def test_type_1_file_with_parts_on_several_tracks(synth):
    """A type 1 file (tempo track, then one track per part) renders every part, tail included."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(60))]))
    for channel, (program, pitch) in enumerate([(0, 72), (32, 36)]):  # piano high, bass low
        mid.tracks.append(mido.MidiTrack([
            mido.Message("program_change", channel=channel, program=program),
            mido.Message("note_on", channel=channel, note=pitch, velocity=100),
            mido.Message("note_off", channel=channel, note=pitch, velocity=0, time=3 * TPB)]))
    out = io.BytesIO()
    mid.save(file=out)
    a = synth.render(out.getvalue(), tail=1.0)
    assert a.seconds == pytest.approx(4.0, abs=0.05)  # 3 beats at 60 qpm, then 1 s
    f, s = spectrum(a.samples[:48000 * 3], 48000)
    low, high = s[(f > 60) & (f < 70)].max(), s[(f > 515) & (f < 530)].max()  # C2 65 Hz, C5 523 Hz
    assert min(low, high) > 0.05 * s.max()


def test_resample_keeps_a_tone():
    np = pytest.importorskip("numpy")
    t = np.arange(48000) / 48000
    tone = (10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)[:, None].repeat(2, axis=1)  # (48000, 2)
    out = audio.resample(tone, 48000, 44100)
    assert out.shape == (44100, 2) and out.dtype == np.int16
    f, s = spectrum(out, 44100)
    assert abs(f[s.argmax()] - 1000) < 2
    assert rms(out) == pytest.approx(rms(tone), rel=0.02)
