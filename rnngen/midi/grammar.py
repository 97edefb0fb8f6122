"""Grammar-masked sampling: which MIDI events may come next, so that every sample decodes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rnngen.midi.codec import BOS, DUR, EOS, PART, PITCH, SHIFT, VEL, MidiCodec
from rnngen.sample import generate


# Grammar states: what the last token was.
START, AFTER_VEL, AFTER_PITCH, AFTER_DUR, AFTER_FULL_DUR, AFTER_SHIFT, AFTER_FULL_SHIFT, DONE, AFTER_PART = range(9)


class Grammar:
    """The `mask` for `generate()`: which tokens may come next in each row, so that every sample is
    a well-formed, canonical piece (what `encode` would write for its own notes).

    Per row it keeps the state (the last token's kind), the highest pitch of the current chord and
    the velocity bin in force. Rules: a PITCH is followed by DURs; DUR and SHIFT repeat only after a
    full-size token; inside a chord pitches rise; VEL only where it changes the velocity and a PITCH
    can follow; EOS only after a complete note; after EOS only EOS; BOS never. With parts it also
    keeps what `RoleCursor` does (the parts used, the part of the last note at this onset) and a
    part named by PART for the next note: PART only before a note's VEL or PITCH, never to the part
    the note would play anyway, and inside a chord never back to an earlier part; pitches rise
    within a part and stay inside the part's range where the table has ranges (so a VEL or a PART
    only where a pitch can still follow).
    """

    def __init__(self, codec: MidiCodec, batch: int, device: torch.device | str = "cpu"):
        V, c = codec.vocab_size, codec
        self.codec, self.device = codec, torch.device(device)
        pitch, dur = slice(0, 128), slice(c.dur0, c.shift0)
        shift, vel, eos = slice(c.shift0, c.vel0), slice(c.vel0, c.bos), c.eos
        part = slice(c.part0, c.part0 + c.num_parts)
        table = torch.zeros(9, V, dtype=torch.bool)
        for state in (START, AFTER_SHIFT):
            table[state, pitch] = table[state, vel] = table[state, part] = True
        table[START, shift] = True
        table[AFTER_FULL_SHIFT] = table[AFTER_SHIFT]
        table[AFTER_FULL_SHIFT, shift] = True
        table[AFTER_VEL, pitch] = True
        table[AFTER_PITCH, dur] = True
        table[AFTER_DUR, pitch] = table[AFTER_DUR, vel] = table[AFTER_DUR, shift] = table[AFTER_DUR, part] = True
        table[AFTER_DUR, eos] = True
        table[AFTER_FULL_DUR] = table[AFTER_DUR]
        table[AFTER_FULL_DUR, dur] = True
        table[DONE, eos] = True
        table[AFTER_PART, pitch] = table[AFTER_PART, vel] = True
        self.table = table.to(self.device)  # (9, V)
        self.category, self.value = c.category.to(self.device), c.value.to(self.device)  # (V,)
        self.pitches = torch.arange(128, device=self.device)
        self.bins = torch.arange(c.velocity_bins, device=self.device)
        self.roles = torch.arange(c.num_parts, device=self.device)
        ranges = c.parts.ranges if c.parts is not None and c.parts.ranges else [(0, 127)] * c.num_parts
        self.low, self.high = torch.tensor(ranges, device=self.device).reshape(-1, 2).unbind(1)  # (P,) each
        self.ensemble = c.parts is not None and c.parts.ensemble
        self.state = torch.full((batch,), START, device=self.device)  # (B,)
        self.chord_top = torch.full((batch,), -1, device=self.device)  # (B,) -1: no note at this onset yet
        self.vel = torch.full((batch,), c.default_bin, device=self.device)  # (B,)
        self.used = torch.full((batch, c.num_parts), self.ensemble, device=self.device)  # (B, P)
        self.chord_part = torch.full((batch,), -1, device=self.device)  # (B,) -1: no note at this onset yet
        self.given = torch.full((batch,), -1, device=self.device)  # (B,) the part a PART named; -1: none

    def feed(self, tokens: Sequence[int]) -> None:
        """Advance every row through the same tokens (the prime)."""
        for t in tokens:
            self.advance(torch.full_like(self.state, int(t)))

    def advance(self, tokens: torch.Tensor) -> None:
        c = self.codec
        tokens = tokens.to(self.device)
        cat, val = self.category[tokens], self.value[tokens]  # (B,)
        done = self.state == DONE
        new = torch.full_like(self.state, START)
        new = torch.where(cat == VEL, AFTER_VEL, new)
        new = torch.where(cat == PART, AFTER_PART, new)
        new = torch.where(cat == PITCH, AFTER_PITCH, new)
        new = torch.where(cat == DUR, torch.where(val == c.max_dur, AFTER_FULL_DUR, AFTER_DUR), new)
        new = torch.where(cat == SHIFT, torch.where(val == c.max_shift, AFTER_FULL_SHIFT, AFTER_SHIFT), new)
        new = torch.where((cat == EOS) | done, DONE, new)
        if c.num_parts:  # before chord_top changes: the parts need the state the token was chosen in
            self._advance_parts(cat, val)
        self.chord_top = torch.where(cat == PITCH, val, self.chord_top)
        self.chord_top = torch.where((cat == SHIFT) | (cat == BOS), -1, self.chord_top)
        self.vel = torch.where(cat == VEL, val, torch.where(cat == BOS, c.default_bin, self.vel))
        self.state = new

    def _next_part(self) -> torch.Tensor:
        """(B,) the part the next note plays unless a PART names another (`RoleCursor.next`)."""
        later = self.used & (self.roles > self.chord_part[:, None])  # (B, P)
        first = later.int().argmax(dim=1)  # (B,) the first True
        return torch.where(later.any(dim=1), first, self.chord_part.clamp(min=0))

    def _role(self) -> torch.Tensor:
        """(B,) the part of the note about to be written."""
        return torch.where(self.given >= 0, self.given, self._next_part())

    def _advance_parts(self, cat: torch.Tensor, val: torch.Tensor) -> None:
        pitch = cat == PITCH
        role = self._role()
        self.used[pitch.nonzero(as_tuple=True)[0], role[pitch]] = True
        self.chord_part = torch.where(pitch, role, self.chord_part)
        self.chord_part = torch.where((cat == SHIFT) | (cat == BOS), -1, self.chord_part)
        self.given = torch.where(cat == PART, val, torch.where(pitch | (cat == BOS), -1, self.given))
        self.used = torch.where((cat == BOS)[:, None], self.ensemble, self.used)

    def allowed(self) -> torch.Tensor:
        c = self.codec
        mask = self.table[self.state].clone()  # (B, V)
        if not c.num_parts:
            mask[:, :128] &= self.pitches > self.chord_top[:, None]  # (B, 128) chords rise
            mask[:, c.vel0:c.bos] &= (self.bins != self.vel[:, None]) & (self.chord_top < 127)[:, None]
            return mask
        role = self._role()
        new_part = role != self.chord_part  # (B,) a note in a part not yet heard at this onset
        rising = new_part[:, None] | (self.pitches > self.chord_top[:, None])  # (B, 128) rising within a part
        inside = (self.pitches >= self.low[role, None]) & (self.pitches <= self.high[role, None])  # (B, 128)
        mask[:, :128] &= rising & inside
        room = new_part | (self.chord_top < self.high[role])  # (B,) a pitch of this part can still come
        mask[:, c.vel0:c.bos] &= (self.bins != self.vel[:, None]) & room[:, None]
        same_room = self.chord_top < self.high[self.chord_part.clamp(min=0)]  # (B,)
        later = (self.roles > self.chord_part[:, None]) | ((self.roles == self.chord_part[:, None])
                                                           & same_room[:, None])  # (B, P)
        mask[:, c.part0:] &= later & (self.roles != self._next_part()[:, None])
        return mask

    def __call__(self, last: torch.Tensor | None) -> torch.Tensor:
        if last is not None:
            self.advance(last)
        return self.allowed()


def sample_tokens(model, codec: MidiCodec, prime: Sequence[int], length: int, batch: int = 1,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  seed: int = 0, device: torch.device | None = None, precision: str = "auto",
                  stepper=None, tags: Sequence[int] | None = None) -> list[list[int]]:
    """Each row's sampled tokens (the prime not included), up to and including its EOS (`tags`: a
    tagged model's tag index for each row)."""
    device = device or next(model.parameters()).device
    grammar = Grammar(codec, batch, device)
    grammar.feed(prime)
    steps = []
    ended = torch.zeros(batch, dtype=torch.bool, device=device)
    for tokens in generate(model, list(prime), length, batch, temperature, top_k, top_p, seed, device,
                           mask=grammar, stepper=stepper, precision=precision, tags=tags):
        steps.append(tokens)
        ended |= tokens == codec.eos
        if bool(ended.all()):  # every row finished its piece: no need to run to `length`
            break
    rows = torch.stack(steps, dim=1).tolist()  # (B, T)
    return [row[: row.index(codec.eos) + 1] if codec.eos in row else row for row in rows]
