"""Parts: which instrument (track) each note belongs to, and the table of part roles a model knows.

A file's parts are its tracks (one per channel in a type 0 file), each with a General MIDI program
and, where it has one, a name. A model cannot have a token per possible track, so the codec holds a
small table of roles fitted from the training corpus, and every part of a file is given the role it
matches (see `PartTable.role_of`):

- A name becomes a role of its own where the corpus is consistent about it: at least a quarter of the
  pieces have a part so named (the chorales' Soprano, Alto, Tenor and Bass, in 400 of 408 files).
- Every other part goes to a role for its program (or for drums), one per program the corpus uses,
  the most used first, while the table has room (MAX_PARTS roles in all).
- Roles are ordered by mean pitch, lowest first, drums last: the order the notes of one chord are
  written in (so the model sees one spelling of each chord, and its notes still rise, as they did
  in one stream before parts). Files are written the other way up, highest part first, as a score
  lists its voices (`written_order`).

With `--parts NAME,NAME,...` the roles are those names (ordered the same way), and parts named
otherwise are left out of training (as drums are without --drums): a chorale model learns the four
voices, not the instruments that double them in 45 of the 408 files. Such a table is an ensemble:
every piece is read as written for all its roles, so each chord's first note is expected in the
lowest voice even in a piece that has not used it yet (see `RoleCursor`).

A table also keeps each role's pitch range in the training pieces (`ranges`), and sampling keeps every
part inside its own: a sampled soprano sings where the corpus's sopranos sing. Tables of checkpoints
from before ranges have none, and sample as they did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rnngen.errors import RnngenError

MAX_PARTS = 16  # roles a model can tell apart; MIDI has 16 channels
NAMED_SHARE = 0.25  # a name gets a role of its own when at least this share of the pieces use it


@dataclass(frozen=True)
class Part:
    """One part as a file has it, or a role as the codec has it."""

    name: str = ""
    program: int = 0  # General MIDI 0-127 (for drums, the kit)
    drums: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "program": self.program, "drums": self.drums}

    @classmethod
    def from_dict(cls, d) -> Part:
        ok = (isinstance(d, dict) and isinstance(d.get("name", ""), str) and isinstance(d.get("program", 0), int)
              and 0 <= d.get("program", 0) <= 127)
        if not ok:
            raise RnngenError(f"the checkpoint's MIDI parts are damaged ({d!r:.60})")
        return cls(d.get("name", ""), d.get("program", 0), bool(d.get("drums", False)))

    def label(self) -> str:
        """The part as printed: its name, else what it plays."""
        return printable(self.name) or ("drums" if self.drums else f"program {self.program}")


def printable(name: str) -> str:
    """A track name fit to print in a column: control characters (a carriage return, a NUL) become
    spaces, and runs of spaces one."""
    return " ".join("".join(c if c.isprintable() else " " for c in name).split())


def parts_setting(value: str | None) -> str | None:
    """--parts as given, checked and tidied: tracks, merge, or 1 to MAX_PARTS track names."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names or len(names) > MAX_PARTS or len({name_key(n) for n in names}) < len(names) \
            or (len(names) > 1 and {"tracks", "merge"} & set(names)):
        raise RnngenError(f"--parts must be tracks, merge, or 1 to {MAX_PARTS} different track names separated "
                          f"by commas (Soprano,Alto,Tenor,Bass), not {value!r}")
    return ",".join(names)


def name_key(name: str) -> str:
    """A track name as roles compare it: its first line, trimmed, case ignored."""
    lines = name.replace("\r", "\n").strip().splitlines()
    return lines[0].strip().casefold() if lines else ""


class PartTable:
    """The roles a model knows, and which role a part of a file plays."""

    def __init__(self, roles: Sequence[Part], named_only: bool = False, ensemble: bool = False,
                 ranges: Sequence[Sequence[int]] | None = None):
        if not 1 <= len(roles) <= MAX_PARTS:
            raise RnngenError(f"the checkpoint's MIDI parts are damaged ({len(roles)} roles)")
        self.roles, self.named_only, self.ensemble = list(roles), bool(named_only), bool(ensemble)
        pair = lambda r: (isinstance(r, (list, tuple)) and len(r) == 2  # noqa: E731
                          and all(type(v) is int for v in r) and 0 <= r[0] <= r[1] <= 127)
        if ranges is not None and (len(ranges) != len(self.roles) or not all(map(pair, ranges))):
            raise RnngenError(f"the checkpoint's MIDI part ranges are damaged ({ranges!r:.60})")
        self.ranges = None if ranges is None else [tuple(r) for r in ranges]  # per role (lowest, highest pitch)
        self._by_name = {(name_key(r.name), r.drums): i for i, r in enumerate(self.roles) if r.name}
        self._by_program = {(r.program, r.drums): i for i, r in enumerate(self.roles) if not r.name}

    def __len__(self) -> int:
        return len(self.roles)

    def to_dict(self) -> dict:
        d = {"parts": [r.to_dict() for r in self.roles], "named_only": self.named_only}
        if self.ensemble:
            d["ensemble"] = True
        if self.ranges is not None:
            d["ranges"] = [list(r) for r in self.ranges]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PartTable:
        """A checkpoint's table; one from before ensembles and ranges has neither and samples as it did."""
        if not isinstance(d.get("parts"), list) or not isinstance(d.get("ranges", []), list):
            raise RnngenError("the checkpoint's MIDI parts are damaged")
        return cls([Part.from_dict(r) for r in d["parts"]], d.get("named_only", False), d.get("ensemble", False),
                   d.get("ranges"))

    def fit_ranges(self, pieces: Sequence[Sequence]) -> None:
        """Each role's range over `pieces` (their notes by role); a role with no notes keeps all 128 pitches."""
        lows, highs = [127] * len(self.roles), [0] * len(self.roles)
        for notes in pieces:
            for n in notes:
                lows[n.part], highs[n.part] = min(lows[n.part], n.pitch), max(highs[n.part], n.pitch)
        self.ranges = [(lo, hi) if lo <= hi else (0, 127) for lo, hi in zip(lows, highs)]

    def renewed(self) -> PartTable:
        """The same roles, as a new model of them gets them now: named roles an ensemble, ranges to be fitted
        (a model from before ensembles and ranges, fine-tuned, learns them)."""
        return PartTable(self.roles, self.named_only, ensemble=self.named_only)

    def role_of(self, part: Part, strict: bool = True) -> int | None:
        """The role a part plays: by name, else by program; None when `strict` and the table keeps
        named parts only. Not strict (a primer), any part gets the nearest role."""
        by_name = self._by_name.get((name_key(part.name), part.drums))
        if by_name is not None:
            return by_name
        if strict and self.named_only:
            return None
        by_program = self._by_program.get((part.program, part.drums))
        if by_program is not None:
            return by_program
        return min(range(len(self.roles)), key=lambda i: (self.roles[i].drums != part.drums,
                                                           abs(self.roles[i].program - part.program), i))

    def written_order(self) -> list[int]:
        """Roles in the order a file lists its tracks: highest part first, drums last."""
        return sorted(range(len(self.roles)), key=lambda i: (self.roles[i].drums, -i))

    @classmethod
    def named(cls, names: Sequence[str], pieces) -> PartTable:
        """Roles given by name, lowest first by mean pitch; each takes the program its parts use most."""
        roles, mean = [], {}
        for name in names:
            parts = [(piece, i) for piece in pieces for i, p in enumerate(piece.parts) if name_key(p.name) == name_key(name)]
            programs = Counter(piece.parts[i].program for piece, i in parts)
            pitches = [n.pitch for piece, i in parts for n in piece.notes if n.part == i]
            roles.append(Part(name.strip(), programs.most_common(1)[0][0] if programs else 0))
            mean[roles[-1]] = sum(pitches) / max(1, len(pitches))
        return cls(sorted(roles, key=lambda r: mean[r]), named_only=True, ensemble=True)

    @classmethod
    def fit(cls, pieces) -> PartTable:
        """Roles for a corpus (pieces with `.parts` and `.notes`), as the module docstring says."""
        names = Counter(key for piece in pieces for key in {(name_key(p.name), p.drums) for p in piece.parts}
                        if key[0])
        keep = {k for k, c in names.items() if c >= NAMED_SHARE * len(pieces)}
        spelled: dict[tuple, Counter] = {}  # role -> (name as written, program) -> parts
        pitch_sum: Counter = Counter()
        pitch_count: Counter = Counter()
        for piece in pieces:
            keys = []
            for p in piece.parts:
                key = (name_key(p.name), p.drums)
                keys.append(("name",) + key if key in keep else ("program", p.program, p.drums))
                written = p.name.replace("\r", "\n").strip().splitlines()[0].strip() if key in keep else ""
                spelled.setdefault(keys[-1], Counter())[(written, p.program)] += 1
            for n in piece.notes:
                pitch_sum[keys[n.part]] += n.pitch
                pitch_count[keys[n.part]] += 1
        named = [k for k in spelled if k[0] == "name"]
        by_use = sorted((k for k in spelled if k[0] == "program"), key=lambda k: -sum(spelled[k].values()))
        chosen = named + by_use[: max(0, MAX_PARTS - len(named))]
        if not chosen:
            return cls([Part()])
        roles = {k: Part(*spelled[k].most_common(1)[0][0], drums=k[-1]) for k in chosen}
        mean = {k: pitch_sum[k] / max(1, pitch_count[k]) for k in chosen}
        chosen.sort(key=lambda k: (roles[k].drums, mean[k], roles[k].name, roles[k].program))
        return cls([roles[k] for k in chosen][:MAX_PARTS])
