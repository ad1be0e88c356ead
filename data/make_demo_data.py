#!/usr/bin/env python3
"""Regenerate the bundled demo audio corpus under data/demo/ from scratch.

Everything here is made by this script: the piano melodies are composed
below (in code, as scale degrees over chord progressions), written as
Standard MIDI Files with ``mido`` and rendered with FluidSynth using the
FluidR3_GM soundfont (General MIDI program 0, Acoustic Grand Piano); the
speech sentences are written below and spoken by the CMU Flite voices
(kal16, awb, rms, slt) and the Festival diphone voice ``ked``.

All output is mono, 16 kHz, 16-bit FLAC, lightly trimmed of leading and
trailing silence and peak-normalised to -1 dBFS.  The output is shipped in
the repository, so ``make demo`` does NOT need this script or any of the
packages below.

Requirements (Debian 12 "bookworm")::

    apt-get update
    apt-get install -y fluidsynth fluid-soundfont-gm flite \
                       festival festvox-kdlpc16k
    python3 -m pip install numpy soundfile soxr mido

(``festvox-kdlpc16k`` provides the Festival voice ``ked_diphone``; the
``festival`` package provides ``text2wave``.)

Usage, from the repository root::

    python3 data/make_demo_data.py            # writes data/demo/{piano,speech}
    python3 data/make_demo_data.py --out DIR  # writes DIR/{piano,speech}

The script deletes and recreates ``<out>/piano`` and ``<out>/speech``; it
leaves other files in ``<out>`` (README.md, LICENSE.md) alone.  The output
is deterministic for a given set of package versions (tested with
fluidsynth 2.3.1, fluid-soundfont-gm 3.1-5.3, flite 2.2-5, festival 2.5.0,
soxr 1.1.0, soundfile 0.14.0 / libsndfile 1.2.2, mido 1.3.3, numpy 2.4.6).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
PEAK_DBFS = -1.0
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RENDER_RATE = 44100  # FluidSynth renders here; we resample with soxr (VHQ)
TICKS_PER_BEAT = 480

# ---------------------------------------------------------------------------
# Music theory helpers
# ---------------------------------------------------------------------------

MAJOR_SCALE = [0, 2, 4, 5, 7, 9, 11]
HARMONIC_MINOR_SCALE = [0, 2, 3, 5, 7, 8, 11]

# Roman numeral -> (root in semitones above the tonic, chord intervals)
MAJ, MIN, DIM, DOM7 = (0, 4, 7), (0, 3, 7), (0, 3, 6), (0, 4, 7, 10)
CHORDS = {
    "major": {
        "I": (0, MAJ),
        "ii": (2, MIN),
        "iii": (4, MIN),
        "IV": (5, MAJ),
        "V": (7, MAJ),
        "V7": (7, DOM7),
        "vi": (9, MIN),
        "vii": (11, DIM),
    },
    "minor": {
        "i": (0, MIN),
        "ii": (2, DIM),
        "III": (3, MAJ),
        "iv": (5, MIN),
        "V": (7, MAJ),
        "V7": (7, DOM7),
        "VI": (8, MAJ),
        "VII": (10, MAJ),
    },
}

DURATIONS = {"w": 4.0, "h": 2.0, "q": 1.0, "e": 0.5, "s": 0.25}
TOKEN_RE = re.compile(r"^(?:(r)|([#b]?)([1-7])([',]*))([whqes])(\.?)$")


def parse_melody(text: str, tonic: int, mode: str, beats_per_bar: int):
    """Parse a melody string into [(start_beat, dur_beats, midi_pitch|None)].

    Tokens: ``<acc><degree><octave><dur><dot>`` e.g. ``3q``, ``1'h.``,
    ``#4e``, ``7,q``, or ``r<dur>`` for a rest.  ``'`` raises and ``,``
    lowers by an octave.  Durations: w h q e s (+ ``.`` for dotted).
    Bars are separated by ``|`` and must each contain ``beats_per_bar``.
    Minor keys use the harmonic minor scale (so degree 7 is the leading
    tone; write ``b7`` for the natural seventh).
    """
    scale = MAJOR_SCALE if mode == "major" else HARMONIC_MINOR_SCALE
    notes, t = [], 0.0
    for bar_no, bar in enumerate(text.split("|"), 1):
        bar_len = 0.0
        for tok in bar.split():
            m = TOKEN_RE.match(tok)
            if not m:
                raise ValueError(f"bad melody token {tok!r}")
            rest, acc, deg, octv, dur, dot = m.groups()
            d = DURATIONS[dur] * (1.5 if dot else 1.0)
            if rest:
                pitch = None
            else:
                pitch = tonic + scale[int(deg) - 1]
                pitch += {"#": 1, "b": -1, "": 0}[acc]
                pitch += 12 * (octv.count("'") - octv.count(","))
            notes.append((t, d, pitch))
            t += d
            bar_len += d
        if abs(bar_len - beats_per_bar) > 1e-9:
            raise ValueError(f"bar {bar_no} has {bar_len} beats: {bar!r}")
    return notes


def voice_chord(lh_tonic: int, root_off: int, intervals) -> list[int]:
    """Root-position chord with its root in [lh_tonic - 5, lh_tonic + 6]."""
    root = lh_tonic + root_off
    while root > lh_tonic + 6:
        root -= 12
    while root < lh_tonic - 5:
        root += 12
    return [root + i for i in intervals]


def accompaniment(prog: str, mode: str, lh_tonic: int, pattern: str, beats_per_bar: int):
    """Left-hand notes [(start, dur, pitch, velocity)] for a progression.

    ``prog`` lists chords bar by bar, separated by ``|``; a bar may hold
    several chords (they share the bar equally).  The final chord is always
    a held block chord so every piece ends on a clear cadence.
    """
    table = CHORDS[mode]
    bars = [b.split() for b in prog.split("|")]
    out = []
    for b, chords in enumerate(bars):
        seg = beats_per_bar / len(chords)
        for c, name in enumerate(chords):
            start = b * beats_per_bar + c * seg
            root_off, ivs = table[name]
            ch = voice_chord(lh_tonic, root_off, ivs)
            last = b == len(bars) - 1 and c == len(chords) - 1
            vel = 60 if c == 0 else 56
            if last:
                out += [(start, seg, p, 58) for p in [ch[0] - 12] + ch]
                continue
            if pattern == "block":  # chord held, re-struck every 2 beats
                k = 0.0
                while k < seg - 1e-9:
                    d = min(2.0, seg - k)
                    out += [(start + k, d, p, vel - (4 if k else 0)) for p in [ch[0] - 12] + ch]
                    k += d
            elif pattern == "quarters":  # bass on 1, chord on every beat
                out.append((start, seg, ch[0] - 12, vel))
                for k in range(int(seg)):
                    out += [(start + k, 1.0, p, vel - (4 if k == 0 else 8)) for p in ch]
            elif pattern == "waltz":  # bass on beat 1, chord on 2 and 3
                out.append((start, seg, ch[0] - 12, vel))
                for k in range(1, int(seg)):
                    out += [(start + k, 1.0, p, vel - 12) for p in ch[:3]]
            else:  # eighth-note figures
                r, third, fifth = ch[0], ch[1], ch[2]
                figure = {
                    "alberti": [r, fifth, third, fifth],
                    "broken": [r - 12, fifth - 12, third, fifth - 12],
                    "arp_up": [r - 12, fifth - 12, r, third],
                    "arp_updown": [r - 12, fifth - 12, r, third, fifth, third, r, fifth - 12],
                }[pattern]
                n = int(round(seg / 0.5))
                for k in range(n):
                    v = vel - (0 if k == 0 else 10 if k % 2 else 6)
                    out.append((start + 0.5 * k, 0.5, figure[k % len(figure)], v))
    return out


# ---------------------------------------------------------------------------
# The pieces (composed for this corpus)
# ---------------------------------------------------------------------------


@dataclass
class Piece:
    name: str
    tonic: int  # MIDI pitch of melody degree 1
    lh_tonic: int  # MIDI pitch around which left-hand chords sit
    mode: str  # "major" | "minor"
    beats: int  # beats per bar (quarter-note beats)
    bpm: int
    pattern: str  # left-hand pattern
    prog: str
    melody: str


TRAIN_PIECES = [
    Piece(
        "p01_c_major_waltz_high",
        72,
        55,
        "major",
        3,
        126,
        "waltz",
        "I | IV | V | I | vi | ii | V7 | I",
        "3h 4q | 6h 5q | 5q 4q 2q | 3h. | 1'h 7q | 6q 4q 2q | 7,q 2q 5q | 1h.",
    ),
    Piece(
        "p02_g_major_alberti",
        67,
        55,
        "major",
        4,
        100,
        "alberti",
        "I | vi | IV | V | I",
        "5q 5e 6e 5q 3q | 1'h 7q 6q | 6q 4q 6q 1'q | 7h 5h | 1'w",
    ),
    Piece(
        "p03_a_minor_arpeggio_low",
        57,
        45,
        "minor",
        4,
        84,
        "arp_up",
        "i | iv | V | i",
        "1q 3q 5q 3q | 4h 6q 4q | 7,h 2q 7,q | 1w",
    ),
    Piece(
        "p04_f_major_broken_3-4",
        65,
        53,
        "major",
        3,
        150,
        "broken",
        "I | ii | V7 | I | IV | I | V | I",
        "1q 3q 5q | 4h 6q | 5q 7,q 2q | 3h 1q | 4q 6q 1'q | 5h 3q | 2q 7,q 5,q | 1h.",
    ),
    Piece(
        "p05_d_major_chorale_high",
        74,
        57,
        "major",
        4,
        120,
        "block",
        "I | IV | I | V | IV V | I",
        "1q 2q 3q 5q | 4h 6h | 5q 3q 1q 3q | 2w | 1q 4q 2q 7,q | 1w",
    ),
    Piece(
        "p06_e_minor_waltz",
        64,
        52,
        "minor",
        3,
        96,
        "waltz",
        "i | iv | VII | III | iv | V | i",
        "5h 3q | 4h 6q | b7h 2q | 3h. | 1'q 6q 4q | 7,h 2q | 1h.",
    ),
    Piece(
        "p07_b-flat_major_alberti_low",
        58,
        46,
        "major",
        4,
        108,
        "alberti",
        "I | vi | IV | ii V7 | I",
        "3q 2q 1q 3q | 1'h 6h | 4q 6q 5q 4q | 2q 4q 5q 7,q | 1w",
    ),
    Piece(
        "p08_d_minor_slow_arpeggio",
        62,
        50,
        "minor",
        4,
        72,
        "arp_updown",
        "i | VI | iv | V i",
        "5h. 3q | 3q 1q 6,h | 6,q 1q 4q 6q | 5q 7,q 1h",
    ),
    Piece(
        "p09_e-flat_major_waltz_high",
        75,
        51,
        "major",
        3,
        138,
        "waltz",
        "I | I | IV | IV | V | V7 | I | I",
        "5,q 1q 3q | 5h 3q | 4q 6q 1'q | 6h 4q | 2q 5q 7q | 2'h 7q | 1'q 5q 3q | 1h.",
    ),
    Piece(
        "p10_c_major_arpeggio_low",
        48,
        48,
        "major",
        4,
        92,
        "arp_up",
        "I | V | vi | IV | V I",
        "1h 3q 5q | 5h 7,h | 6,q 1q 3h | 4q 3q 2q 1q | 2h 1h",
    ),
    Piece(
        "p11_a_major_quarters",
        69,
        57,
        "major",
        4,
        126,
        "quarters",
        "I | iii | IV | V | vi IV | V7 I",
        "1q 3q 5q 3q | 5q 7q 5h | 6q 4q 1q 4q | 5h 7,h | 1q 3q 4q 6q | 5q 4q 3h",
    ),
    Piece(
        "p12_g_minor_broken_3-4",
        67,
        55,
        "minor",
        3,
        108,
        "broken",
        "i | iv | V | i | VI | iv | V | i",
        "1q 2q 3q | 4h 6q | 7,h 2q | 3h 1q | 6,q 1q 3q | 4h. | 5q 7,q 2q | 1h.",
    ),
    Piece(
        "p13_e_major_arpeggio",
        64,
        52,
        "major",
        4,
        120,
        "arp_updown",
        "I | vi | ii V7 | I",
        "3q 5q 1'q 5q | 6h 1'h | 2'q 6q 7q 5q | 1'w",
    ),
]

VALID_PIECES = [
    Piece(
        "v01_f_major_alberti_high",
        77,
        53,
        "major",
        4,
        116,
        "alberti",
        "I | IV | ii V | IV V7 | I",
        "5q 3q 1q 3q | 4q 6q 1'h | 2q 4q 5q 7,q | 6q 4q 2q 7,q | 1w",
    ),
    Piece(
        "v02_b_minor_waltz_low",
        59,
        47,
        "minor",
        3,
        100,
        "waltz",
        "i | iv | V | VI | V | i",
        "1q 3q 5q | 4h 6q | 7,h 2q | 1q 3q 6q | 5q 7,q 2q | 1h.",
    ),
]


def piece_to_midi(piece: Piece, path: Path, tail_s: float = 1.5) -> None:
    """Write a piece as a type-0 Standard MIDI File (piano, program 0)."""
    mel = parse_melody(piece.melody, piece.tonic, piece.mode, piece.beats)
    n_bars = len(piece.melody.split("|"))
    if len(piece.prog.split("|")) != n_bars:
        raise ValueError(f"{piece.name}: melody and progression lengths differ")
    events = []  # (tick, order, message); note_off sorts before note_on

    def add(start, dur, pitch, vel, ch, legato):
        on = int(round(start * TICKS_PER_BEAT))
        off = int(round((start + dur * legato) * TICKS_PER_BEAT))
        events.append((on, 1, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
        events.append((off, 0, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))

    for start, dur, pitch in mel:
        if pitch is None:
            continue
        downbeat = abs(start / piece.beats - round(start / piece.beats)) < 1e-9
        add(start, dur, pitch, 92 if downbeat else 84, 0, 0.95)
    for start, dur, pitch, vel in accompaniment(
        piece.prog, piece.mode, piece.lh_tonic, piece.pattern, piece.beats
    ):
        add(start, dur, pitch, vel, 1, 0.92)

    end_tick = n_bars * piece.beats * TICKS_PER_BEAT
    tail_ticks = int(round(tail_s * piece.bpm / 60 * TICKS_PER_BEAT))
    events.sort(key=lambda e: (e[0], e[1], e[2].channel, e[2].note))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(piece.bpm), time=0))
    for ch in (0, 1):
        track.append(mido.Message("program_change", channel=ch, program=0, time=0))
        track.append(mido.Message("control_change", channel=ch, control=7, value=100, time=0))
        # no reverb / chorus sends: keep the signal dry and simple
        track.append(mido.Message("control_change", channel=ch, control=91, value=0, time=0))
        track.append(mido.Message("control_change", channel=ch, control=93, value=0, time=0))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    # A harmless event after the last note lets the release ring out.
    final = end_tick + tail_ticks
    track.append(
        mido.Message("control_change", channel=0, control=64, value=0, time=max(0, final - now))
    )
    track.append(mido.MetaMessage("end_of_track", time=0))
    mf = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    mf.tracks.append(track)
    mf.save(str(path))


def render_midi(midi_path: Path, wav_path: Path) -> None:
    subprocess.run(
        [
            "fluidsynth",
            "-n",
            "-i",
            "-q",
            "-R",
            "0",
            "-C",
            "0",
            "-g",
            "0.5",
            "-r",
            str(RENDER_RATE),
            "-O",
            "float",
            "-T",
            "wav",
            "-F",
            str(wav_path),
            str(SOUNDFONT),
            str(midi_path),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------------------
# Speech (sentences written for this corpus)
# ---------------------------------------------------------------------------

# folder/speaker label -> how to synthesise
VOICES = {
    "kal": ("flite", "kal16"),  # CMU Flite, US English male (diphone, 16 kHz)
    "awb": ("flite", "awb"),  # CMU Flite, Scottish English male
    "rms": ("flite", "rms"),  # CMU Flite, US English male
    "slt": ("flite", "slt"),  # CMU Flite, US English female
    "ked": ("festival", "ked_diphone"),  # Festival, US English male
}

SENTENCES = [
    "The kettle began to whistle just as the rain started.",
    "Please put the blue folder on the second shelf.",
    "Our train leaves at a quarter past seven tomorrow morning.",
    "Have you ever tried to count the stars on a clear night?",
    "A small brown dog waited patiently by the bakery door.",
    "The river was calm, so we rowed all the way to the old mill.",
    "She painted the fence yellow and then changed her mind.",
    "Could you turn the music down a little, please?",
    "Fresh bread smells best on a cold winter afternoon.",
    "The meeting moved to Thursday because the hall was booked.",
    "Nine green bottles stood in a row on the windowsill.",
    "He forgot his umbrella again, and of course it rained.",
    "The library closes early on public holidays.",
    "Why does the moon look larger near the horizon?",
    "We planted tomatoes, beans, and a row of sunflowers.",
    "The old clock in the hallway chimes every hour.",
    "Turn left at the bridge and follow the narrow lane.",
    "My grandmother keeps her recipes in a tin box.",
    "The children laughed when the kite finally lifted off.",
    "A gentle breeze carried the scent of pine across the valley.",
    "Thirty two students signed up for the chess club.",
    "Is this the right platform for the northbound train?",
    "The soup needs a pinch of salt and a little pepper.",
    "Lightning flashed twice before we heard the thunder.",
    "Remember to water the plants while I am away.",
    "The museum has a new room full of ancient maps.",
    "He whistled a cheerful tune on his way to work.",
    "Every autumn the geese fly south in long lines.",
    "What time does the post office open on Saturdays?",
    "The bicycle needs new brakes before the long ride.",
    "Quiet waves rolled onto the empty beach at dawn.",
    "She found a silver coin hidden under the carpet.",
    "The recipe calls for three eggs and a cup of flour.",
    "Let's meet at the corner cafe around noon.",
    "The mountain path was steep, but the view was worth it.",
    # held-out (valid): the last five sentences, one per voice
    "A yellow tram rattled slowly down the hill.",
    "Did anyone see where I left my glasses?",
    "The orchestra tuned their instruments before the concert.",
    "Snow covered the rooftops by the time we woke up.",
    "Thank you for waiting, your table is ready now.",
]
N_VALID_SENTENCES = 5


def speech_assignments():
    """Yield (split, voice, utt_id, text); sentence i -> voice i mod 5."""
    names = list(VOICES)
    n_train = len(SENTENCES) - N_VALID_SENTENCES
    for i, text in enumerate(SENTENCES):
        split = "train" if i < n_train else "valid"
        voice = names[i % len(names)]
        yield split, voice, f"{voice}_s{i + 1:02d}", text


def synthesise(voice: str, text: str, wav_path: Path, tmp: Path) -> None:
    engine, name = VOICES[voice]
    if engine == "flite":
        subprocess.run(["flite", "-voice", name, "-t", text, "-o", str(wav_path)], check=True)
    else:
        txt = tmp / "utt.txt"
        txt.write_text(text + "\n", encoding="utf-8")
        subprocess.run(
            ["text2wave", "-eval", f"(voice_{name})", str(txt), "-o", str(wav_path)], check=True
        )


# ---------------------------------------------------------------------------
# Post-processing: mono, 16 kHz, trim, normalise, FLAC
# ---------------------------------------------------------------------------


def finish(
    wav_in: Path, flac_out: Path, trim_db: float, pad_start: float, pad_end: float, fade_out: float
) -> float:
    x, sr = sf.read(str(wav_in), dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        x = soxr.resample(x, sr, SAMPLE_RATE, quality="VHQ")
    x = x - x.mean()
    peak = np.max(np.abs(x))
    if peak <= 0:
        raise RuntimeError(f"{wav_in}: silent render")
    # light trim: keep from the first to the last sample within trim_db of
    # the peak, plus a little padding
    idx = np.flatnonzero(np.abs(x) > peak * 10 ** (trim_db / 20))
    a = max(0, idx[0] - int(pad_start * SAMPLE_RATE))
    b = min(len(x), idx[-1] + 1 + int(pad_end * SAMPLE_RATE))
    x = x[a:b].copy()
    n_in = int(0.005 * SAMPLE_RATE)
    x[:n_in] *= np.linspace(0.0, 1.0, n_in)
    n_out = min(len(x), int(fade_out * SAMPLE_RATE))
    x[len(x) - n_out :] *= np.linspace(1.0, 0.0, n_out) ** 2
    x *= 10 ** (PEAK_DBFS / 20) / np.max(np.abs(x))
    y = np.round(x * 32767.0).astype(np.int16)
    flac_out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(flac_out), y, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(y) / SAMPLE_RATE


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo")
    args = ap.parse_args(argv)
    out: Path = args.out
    for tool in ("fluidsynth", "flite", "text2wave"):
        if shutil.which(tool) is None:
            sys.exit(f"missing tool {tool!r}; see the header of {__file__}")
    if not SOUNDFONT.exists():
        sys.exit(f"missing {SOUNDFONT}; apt-get install fluid-soundfont-gm")

    for sub in ("piano", "speech"):
        shutil.rmtree(out / sub, ignore_errors=True)

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for split, pieces in (("train", TRAIN_PIECES), ("valid", VALID_PIECES)):
            for piece in pieces:
                mid, wav = tmp / f"{piece.name}.mid", tmp / f"{piece.name}.wav"
                piece_to_midi(piece, mid)
                render_midi(mid, wav)
                dest = out / "piano" / split / f"{piece.name}.flac"
                dur = finish(wav, dest, trim_db=-60.0, pad_start=0.02, pad_end=0.05, fade_out=0.3)
                print(f"{dest.relative_to(out)}  {dur:6.2f} s")
        for split, voice, utt, text in speech_assignments():
            wav = tmp / f"{utt}.wav"
            synthesise(voice, text, wav, tmp)
            dest = out / "speech" / split / voice / f"{utt}.flac"
            dur = finish(wav, dest, trim_db=-40.0, pad_start=0.08, pad_end=0.12, fade_out=0.03)
            print(f"{dest.relative_to(out)}  {dur:6.2f} s  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
