"""Hearing MIDI: render a MIDI file through a General MIDI SoundFont into PCM, and write it as WAV or
FLAC.

Everything comes from pip through the `audio` extra, with no system library and nothing downloaded
at run time:

- the synthesizer is `midirenderer` (a Rust SoundFont player, rustysynth, in one self-contained
  wheel). It plays every General MIDI program at its right pitch and channel 10 as the drum kit.
  Measured against the other pip candidates (docs/AUDIO.md, benchmarks/render_speed.py): symusic's
  synthesizer played most notes at the wrong pitch with both SoundFonts tried (A3 came out near
  990 Hz), tinysoundfont renders correctly but requires PyAudio, which does not build from pip alone
  on Linux (it needs PortAudio's headers), and pyfluidsynth needs the system's libfluidsynth.
- the default SoundFont is TimGM6mb.sf2 (6 MB, all 128 GM programs and the GM drum kits), which
  the `pretty_midi` wheel ships. It is found without importing pretty_midi.

Import-safe: `import rnngen.audio` needs nothing beyond the standard library; the optional packages
are imported when a function needs them, and their absence is one RnngenError line.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import math
import os
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rnngen.errors import RnngenError, first_line, install_hint

if TYPE_CHECKING:
    import numpy as np

SOUNDFONT_ENV = "RNNGEN_SOUNDFONT"
INSTALL_HINT = f"audio needs the optional packages: {install_hint('audio')}"
SYNTH_RATE = 48000  # midirenderer always renders 16-bit stereo at 48 kHz; other rates are resampled
# The default is the synthesizer's own rate: resampling a chorale to 44.1 kHz took 0.6 s on top of
# 0.8 s of rendering, and 48 kHz plays everywhere.
DEFAULT_RATE = SYNTH_RATE
# Silence added after the last event so that the final notes ring out: the synthesizer stops at the
# file's end. Measured on TimGM6mb, a chord's release is under -60 dB of its level within 1 s on the
# piano, 2 s on strings (48), and a pad (88) falls silent 2 s after its note-off.
TAIL_SECONDS = 2.0
FORMATS = (".wav", ".flac")


@dataclass(frozen=True)
class Audio:
    """PCM audio: 16-bit samples, one column per channel."""

    samples: np.ndarray  # (frames, channels) int16
    rate: int  # frames per second

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def _optional(module: str):
    """An optional package, or the one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RnngenError(INSTALL_HINT) from None


def require(soundfont: str | Path | None = None) -> Path:
    """Fail now, in one line, if audio cannot be made later: the synthesizer missing, or the
    SoundFont; the SoundFont's path when all is there."""
    _optional("midirenderer")
    return resolve_soundfont(soundfont)


# --------------------------------------------------------------------------------------------------
# the SoundFont


def default_soundfont() -> Path:
    """TimGM6mb.sf2 from the installed pretty_midi wheel. `find_spec` locates the package without
    running it, so numpy and the rest of pretty_midi are not imported just to find a file."""
    try:
        spec = importlib.util.find_spec("pretty_midi")
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise RnngenError(INSTALL_HINT)
    return Path(list(spec.submodule_search_locations)[0]) / "TimGM6mb.sf2"


def resolve_soundfont(soundfont: str | Path | None = None) -> Path:
    """The SoundFont to use: the argument, else $RNNGEN_SOUNDFONT, else the packaged default.
    Checked here (exists, readable, a RIFF sfbk file) so that a wrong path fails before rendering."""
    if soundfont is not None and str(soundfont) != "":
        path, origin = Path(soundfont), "the soundfont"
    elif os.environ.get(SOUNDFONT_ENV):
        path, origin = Path(os.environ[SOUNDFONT_ENV]), f"the soundfont in ${SOUNDFONT_ENV}"
    else:
        path, origin = default_soundfont(), "the packaged soundfont"
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise RnngenError(f"cannot read {origin} {path}: {e.strerror or e}") from None
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise RnngenError(f"{origin} {path} is not a SoundFont 2 file (.sf2)")
    return path


# --------------------------------------------------------------------------------------------------
# rendering


def _midi_with_tail(midi: bytes, seconds: float) -> bytes:
    """The MIDI file with its end moved `seconds` later (at the tempo in force at the end), so the
    synthesizer, which stops at the file's last event, lets the final notes decay."""
    import mido

    try:
        mid = mido.MidiFile(file=io.BytesIO(midi))
    except EOFError:
        raise RnngenError("the MIDI file is truncated") from None
    except Exception as e:  # mido raises many kinds on damaged input; any of them means "unreadable"
        raise RnngenError(f"the MIDI file is damaged ({first_line(e)})") from None
    if mid.type == 2 or not mid.tracks or mid.ticks_per_beat <= 0:
        raise RnngenError("only MIDI files of type 0 or 1, timed in beats, can be rendered")
    tempo, tempo_tick, ends = 500_000, -1, []  # 120 qpm until a set_tempo says otherwise
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo" and tick >= tempo_tick:
                tempo, tempo_tick = msg.tempo, tick
        ends.append(tick)
    longest = mid.tracks[max(range(len(ends)), key=ends.__getitem__)]
    extra = round(seconds * 1e6 / tempo * mid.ticks_per_beat)
    if longest and longest[-1].type == "end_of_track":
        longest[-1] = longest[-1].copy(time=longest[-1].time + extra)
    else:
        longest.append(mido.MetaMessage("end_of_track", time=extra))
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()



def _read_wav(data: bytes) -> Audio:
    np = _optional("numpy")
    with wave.open(io.BytesIO(data)) as w:
        channels, rate, width = w.getnchannels(), w.getframerate(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise RnngenError(f"the synthesizer returned {8 * width}-bit audio; 16-bit was expected")
    samples = np.frombuffer(raw, dtype="<i2").astype(np.int16).reshape(-1, channels)  # (frames, channels)
    return Audio(samples, rate)


def render(midi: bytes | str | Path, soundfont: str | Path | None = None, sample_rate: int = DEFAULT_RATE,
           tail: float = TAIL_SECONDS) -> Audio:
    """A MIDI file (bytes or path) as 16-bit stereo PCM at `sample_rate`: the piece's length at its
    tempo, plus `tail` seconds for the last notes to ring out."""
    if not 8000 <= sample_rate <= 192_000:
        raise RnngenError(f"the sample rate must be between 8000 and 192000 Hz, not {sample_rate}")
    if not 0 <= tail <= 60:
        raise RnngenError(f"the tail must be between 0 and 60 seconds, not {tail}")
    data = _read_midi(midi)
    synth = _optional("midirenderer")
    font = resolve_soundfont(soundfont)
    try:
        wav = synth.render_wave_from(font.read_bytes(), _midi_with_tail(data, tail))
    except OSError as e:
        raise RnngenError(f"cannot read the soundfont {font}: {e.strerror or e}") from None
    except RuntimeError as e:  # midirenderer reports a bad SoundFont or MIDI file as RuntimeError
        raise RnngenError(f"cannot render with {font.name}: {first_line(e)}") from None
    audio = _read_wav(wav)
    if audio.rate != sample_rate:
        audio = Audio(resample(audio.samples, audio.rate, sample_rate), sample_rate)
    return audio


def _read_midi(midi: bytes | str | Path) -> bytes:
    if isinstance(midi, (bytes, bytearray)):
        data = bytes(midi)
    else:
        try:
            data = Path(midi).read_bytes()
        except OSError as e:
            raise RnngenError(f"cannot read {midi}: {e.strerror or e}") from None
    if data[:4] != b"MThd":
        raise RnngenError("not a MIDI file (it does not start with MThd)")
    return data


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """int16 (frames, channels) from one rate to another, band-limited through the FFT.

    Cutting or padding the spectrum is an ideal low-pass filter, so nothing above the new Nyquist
    frequency folds back. The FFT treats the signal as periodic; rendered audio starts and ends in
    (near) silence, so the wrap-around is inaudible. The input is zero-padded to a length made of
    small primes so that the transforms stay fast for any length.
    """
    np = _optional("numpy")
    g = math.gcd(rate_in, rate_out)
    step_in, step_out = rate_in // g, rate_out // g
    frames = samples.shape[0]
    blocks = _smooth_at_least(-(-frames // step_in))
    n_in, n_out = blocks * step_in, blocks * step_out
    x = np.zeros((n_in, samples.shape[1]), dtype=np.float32)
    x[:frames] = samples
    spectrum = np.fft.rfft(x, axis=0)  # (n_in // 2 + 1, channels)
    kept = np.zeros((n_out // 2 + 1, samples.shape[1]), dtype=spectrum.dtype)
    keep = min(len(spectrum), len(kept))
    kept[:keep] = spectrum[:keep]
    y = np.fft.irfft(kept, n=n_out, axis=0) * (n_out / n_in)  # (n_out, channels)
    y = y[: round(frames * rate_out / rate_in)]
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def _smooth_at_least(n: int) -> int:
    """The smallest number >= n whose prime factors are 2, 3 and 5 (a fast FFT length)."""
    best, p5 = 2 * max(n, 1), 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


# --------------------------------------------------------------------------------------------------
# writing


def write_audio(path: str | Path, audio: Audio) -> Path:
    """Write `audio` as the file's extension says: .wav (the standard library's `wave`, 16-bit PCM)
    or .flac (lossless, through `soundfile`, whose wheels carry libsndfile; part of the audio extra).
    Written to a temporary file beside it and moved into place, so a failure leaves no half file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise RnngenError(f"cannot write {suffix or 'a file without an extension'}: "
                          f"name the output .wav or .flac")
    if audio.samples.ndim != 2 or str(audio.samples.dtype) != "int16":
        raise RnngenError("audio samples must be int16, shaped (frames, channels)")
    data = (_wav_bytes if suffix == ".wav" else _flac_bytes)(audio)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise RnngenError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; an audio file gets the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RnngenError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _wav_bytes(audio: Audio) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(audio.channels)
        w.setsampwidth(2)
        w.setframerate(audio.rate)
        w.writeframes(audio.samples.astype("<i2").tobytes())
    return out.getvalue()


def _flac_bytes(audio: Audio) -> bytes:
    soundfile = _optional("soundfile")
    out = io.BytesIO()
    soundfile.write(out, audio.samples, audio.rate, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def render_file(midi: bytes | str | Path, out: str | Path, soundfont: str | Path | None = None,
                sample_rate: int = DEFAULT_RATE) -> Audio:
    """Render a MIDI file (bytes or path) and write it to `out` (.wav or .flac); returns the audio."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:  # checked before rendering, which takes seconds
        raise RnngenError(f"cannot write {suffix or 'a file without an extension'}: name the output .wav or .flac")
    audio = render(midi, soundfont, sample_rate)
    write_audio(out, audio)
    return audio
