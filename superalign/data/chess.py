"""Chess with exact ground truth from Stockfish: puzzles graded by search depth, and move preferences.

Chess is a domain where a cheap, exact "gold" supervisor exists: a fixed-depth Stockfish search.
This module turns it into data for oversight experiments:

- :class:`Stockfish`, a context manager over ``chess.engine.SimpleEngine.popen_uci`` set up for
  reproducibility (one thread, a fixed hash size, the hash cleared before every search, fixed depth),
  whose :meth:`~Stockfish.analyse` ranks candidate moves and whose :meth:`~Stockfish.move_value` is
  the *gold reward* of a move (the engine's evaluation of the move from the mover's point of view);
- :func:`random_positions`: reproducible positions from seeded random legal playouts;
- :func:`make_puzzle` / :func:`generate_puzzles`: the best move at a target depth, the runner-up, the
  gap between them and the **search depth needed** to find the best move (a difficulty label);
- the registered W2S task ``chess_best_move`` (is this candidate the engine's best move?);
- :func:`move_preference_pairs`: TRL-style ``prompt``/``chosen``/``rejected`` rows whose preference
  is the engine's, for reward models and over-optimisation curves.

Scores are centipawns from the side to move; a forced mate in ``k`` moves is mapped to ``±(MATE_CP - k)`` so it
outranks every material score and a quicker mate ranks above a slower one.

Needs the PyPI package ``chess`` (``pip install 'superalign[chess]'``) and the Debian package
``stockfish`` (``superalign assets install stockfish``).
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from superalign.data.registry import register_task
from superalign.data.stockfish import (  # noqa: F401  (re-exported: the engine and positions live there)
    DEFAULT_HASH_MB,
    MATE_CP,
    Candidate,
    Stockfish,
    _check_depth,
    _check_int,
    _chess,
    iter_positions,
    parse_fen,
    parse_move,
    random_positions,
)
from superalign.data.task import TaskData
from superalign.errors import ConfigError, DataError
from superalign.io import read_jsonl, write_jsonl_atomic  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    import chess
    import chess.engine

GENERATOR_VERSION = 1  # bump when generation changes what rows a given option set produces

PIECE_NAMES = {1: "Pawn", 2: "Knight", 3: "Bishop", 4: "Rook", 5: "Queen", 6: "King"}


@dataclass
class Puzzle:
    """A position whose best move at ``depth`` beats the runner-up by ``gap_cp``.

    ``depth_needed`` is the smallest search depth from which Stockfish's best move equals the final
    one at every deeper iteration (1 = obvious, ``depth`` = found only at the last iteration).
    ``best_by_depth[d-1]`` is the best move (UCI) after iteration ``d``.
    """

    fen: str
    depth: int
    best_uci: str
    best_san: str
    best_cp: int
    second_uci: str
    second_san: str
    second_cp: int
    gap_cp: int
    depth_needed: int
    best_by_depth: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "Puzzle":
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


def depth_needed(best_by_depth: dict[int, str]) -> int:
    """Smallest depth ``d`` such that the best move at every depth ``>= d`` equals the final best move."""
    if not best_by_depth:
        raise DataError("best_by_depth", "is empty", "analyse the position before asking for the depth needed")
    depths = sorted(best_by_depth)
    final = best_by_depth[depths[-1]]
    needed = depths[-1]
    for d in reversed(depths):
        if best_by_depth[d] != final:
            break
        needed = d
    return needed


def make_puzzle(engine: Stockfish, fen: str, depth: int = 12, min_gap_cp: int = 100) -> Puzzle | None:
    """The puzzle of ``fen`` at ``depth``, or None when the best move is not ``min_gap_cp`` better than the second.

    Positions with fewer than two legal moves (or a finished game) give None: there is nothing to choose.
    """
    board = parse_fen(fen)
    depth = _check_depth(depth)
    min_gap_cp = _check_int("min_gap_cp", min_gap_cp, 0, hint="use a centipawn gap >= 0 (100 = one pawn)")
    if board.legal_moves.count() < 2:
        return None
    by_depth = engine.analyse_by_depth(board.fen(), depth, multipv=2)
    if not by_depth:
        return None
    final = by_depth[max(by_depth)]
    if len(final) < 2:
        return None
    best, second = final[0], final[1]
    gap = best.cp - second.cp
    if gap < min_gap_cp:
        return None
    best_at = {d: c[0].uci for d, c in by_depth.items() if c}
    return Puzzle(
        fen=board.fen(), depth=max(by_depth), best_uci=best.uci, best_san=best.san, best_cp=best.cp,
        second_uci=second.uci, second_san=second.san, second_cp=second.cp, gap_cp=gap,
        depth_needed=depth_needed(best_at), best_by_depth=[best_at[d] for d in sorted(best_at)],
    )


def generate_puzzles(n: int, seed: int = 0, depth: int = 12, min_gap_cp: int = 100, *,
                     min_ply: int = 8, max_ply: int = 40, min_depth_needed: int = 1,
                     engine: Stockfish | None = None, max_positions: int | None = None) -> list[Puzzle]:
    """The first ``n`` puzzles (see :func:`make_puzzle`) in the seeded position stream of :func:`iter_positions`.

    Deterministic: the same arguments give the same puzzles on every run. Opens (and closes) its
    own engine unless ``engine`` is given. ``min_depth_needed`` > 1 keeps only puzzles the engine
    needs that deep a search for (random playouts leave many pieces hanging, so most puzzles are
    found at depth 1; raising it costs proportionally more searches). Looks at most
    ``max_positions`` positions (default ``50 * n + 100``) before raising a :class:`DataError`.
    """
    n = _check_int("n", n, 0)
    depth = _check_depth(depth)
    min_depth_needed = _check_int("min_depth_needed", min_depth_needed, 1, depth,
                                  f"use a depth between 1 and depth={depth}")
    limit = 50 * n + 100 if max_positions is None else _check_int("max_positions", max_positions, 1)
    if engine is None:
        with Stockfish() as sf:
            return generate_puzzles(n, seed, depth, min_gap_cp, min_ply=min_ply, max_ply=max_ply,
                                    min_depth_needed=min_depth_needed, engine=sf, max_positions=max_positions)
    puzzles: list[Puzzle] = []
    looked = 0
    for fen in iter_positions(seed, min_ply, max_ply):
        if len(puzzles) >= n:
            break
        if looked >= limit:
            raise DataError("min_gap_cp", f"only {len(puzzles)} of {n} positions had a best move {min_gap_cp} cp "
                            f"clear of the second (found at depth >= {min_depth_needed}) after {looked} positions",
                            "lower min_gap_cp or min_depth_needed, ask for fewer puzzles, or raise max_positions")
        looked += 1
        puzzle = make_puzzle(engine, fen, depth, min_gap_cp)
        if puzzle is not None and puzzle.depth_needed >= min_depth_needed:
            puzzles.append(puzzle)
    return puzzles


# --------------------------------------------------------------------------------------------------
# the W2S task


def _cache_dir() -> Path:
    from superalign.store.store import superalign_home

    return superalign_home() / "data" / "chess"


def _options_key(options: dict[str, Any]) -> str:
    from superalign.store.store import canonical_json

    return hashlib.sha256(canonical_json(options).encode()).hexdigest()[:20]


CANDIDATE_TEXT = "Position (FEN): {fen}\nCandidate move: {san}"
BEST_MOVE_PROMPT = ("{text}\nIs the candidate move the best move for the side to move "
                    "(as a strong chess engine would play)? Answer:")


def best_move_rows(puzzles: Sequence[Puzzle], seed: int = 0, negative: str = "random") -> list[dict[str, Any]]:
    """One row per puzzle: the engine's best move (label 1) or a legal non-best move (label 0).

    Labels alternate in randomly ordered pairs, so every even-length prefix is exactly balanced.
    ``negative="random"`` draws the non-best move uniformly from the other legal moves;
    ``"second"`` uses the engine's runner-up (a harder negative). Every non-best move is at least the
    puzzle's ``gap_cp`` worse than the best move, so no label is ambiguous.
    """
    chess = _chess()
    if negative not in ("random", "second"):
        raise ConfigError("negative", f"is {negative!r}", "use 'random' (any legal non-best move) or 'second' (the runner-up)")
    rng = random.Random(seed)
    rows = []
    for i, p in enumerate(puzzles):
        if i % 2 == 0:
            first_is_best = rng.random() < 0.5
        label = int(first_is_best if i % 2 == 0 else not first_is_best)
        board = chess.Board(p.fen)
        if label:
            uci = p.best_uci
        elif negative == "second":
            uci = p.second_uci
        else:
            others = sorted(m.uci() for m in board.legal_moves if m.uci() != p.best_uci)
            uci = random.Random(f"chess-negative:{seed}:{p.fen}").choice(others)
        san = board.san(chess.Move.from_uci(uci))
        rows.append({
            "text": CANDIDATE_TEXT.format(fen=p.fen, san=san), "label": label, "fen": p.fen,
            "candidate_uci": uci, "candidate_san": san, "difficulty": p.depth_needed,
            "best_uci": p.best_uci, "best_san": p.best_san, "best_cp": p.best_cp,
            "second_uci": p.second_uci, "second_cp": p.second_cp, "gap_cp": p.gap_cp, "depth": p.depth,
        })
    return rows


def best_move_task_rows(n_positions: int = 200, seed: int = 0, depth: int = 12, min_gap_cp: int = 100,
                        min_ply: int = 8, max_ply: int = 40, negative: str = "random", min_depth_needed: int = 1,
                        cache: bool = True) -> tuple[list[dict[str, Any]], Path | None]:
    """The rows of ``chess_best_move`` for an option set, generated once and cached as JSONL.

    The cache file is ``superalign_home()/data/chess/chess_best_move-<hash>.jsonl`` where the hash
    covers the options, the Stockfish version, its settings and the generator version. Returns the
    rows and the cache path (None when ``cache=False``).
    """
    n_positions = _check_int("n_positions", n_positions, 2, hint="ask for at least 2 positions (one per class)")
    depth = _check_depth(depth)
    seed = _check_int("seed", seed, 0)
    min_gap_cp = _check_int("min_gap_cp", min_gap_cp, 0, hint="use a centipawn gap >= 0 (100 = one pawn)")
    if negative not in ("random", "second"):  # fail before the slow part
        best_move_rows([], seed, negative)
    options = {"n_positions": n_positions, "seed": int(seed), "depth": depth, "min_gap_cp": int(min_gap_cp),
               "min_ply": int(min_ply), "max_ply": int(max_ply), "negative": negative,
               "min_depth_needed": int(min_depth_needed)}

    def make(sf: Stockfish) -> list[dict[str, Any]]:
        puzzles = generate_puzzles(n_positions, seed, depth, min_gap_cp, min_ply=min_ply, max_ply=max_ply,
                                   min_depth_needed=min_depth_needed, engine=sf)
        return best_move_rows(puzzles, seed, negative)

    return _cached_rows("chess_best_move", options, n_positions, make, cache)


def _cached_rows(kind: str, options: dict[str, Any], n: int, make: Callable[[Stockfish], list[dict[str, Any]]],
                 cache: bool = True) -> tuple[list[dict[str, Any]], Path | None]:
    """Rows that ``make(engine)`` generates, cached once per option set (with the engine's version and
    settings and the generator version) as ``superalign_home()/data/chess/<kind>-<hash>.jsonl``."""
    with Stockfish() as sf:
        key = {"task": kind, "generator": GENERATOR_VERSION, **options, "stockfish": sf.version,
               "threads": sf.threads, "hash_mb": sf.hash_mb}
        path = _cache_dir() / f"{kind}-{_options_key(key)}.jsonl" if cache else None
        if path is not None and path.exists():
            rows = read_jsonl(path)
            if len(rows) == n:
                return rows, path
        rows = make(sf)
    if path is not None:
        write_jsonl_atomic(path, rows)
    return rows, path


@register_task(
    "chess_best_move",
    description="Is the candidate move Stockfish's best move in this position? Random-playout positions "
                "where the best move is clearly better than the second (exact ground truth from Stockfish 15.1)",
    source="Debian stockfish + PyPI chess", asset="stockfish", difficulty="search depth needed",
)
def chess_best_move(n_positions: int = 200, seed: int = 0, depth: int = 12, min_gap_cp: int = 100,
                    min_ply: int = 8, max_ply: int = 40, negative: str = "random", min_depth_needed: int = 1,
                    position_seed: int | None = None) -> TaskData:
    """The binary task: label 1 if ``Candidate move`` is the engine's best move at ``depth``, else 0.

    Options: ``n_positions`` rows (one per position, classes balanced), ``depth`` of the engine search,
    ``min_gap_cp`` by which the best move must beat the second, the playout length ``min_ply..max_ply``,
    ``negative`` ("random" legal non-best move or the engine's "second" best), ``min_depth_needed``
    (keep only positions at least that hard). Rows are generated once per option set and cached in
    ``superalign_home()/data/chess/``.

    ``difficulty`` is the search depth Stockfish needs to settle on the best move. ``load_task``
    keeps its own ``seed`` (for subsampling), so through it pass ``position_seed=`` to choose the
    positions; calling this function directly, ``seed`` works too (``position_seed`` wins if given).
    """
    seed = seed if position_seed is None else position_seed
    rows, _ = best_move_task_rows(n_positions, seed, depth, min_gap_cp, min_ply, max_ply, negative, min_depth_needed)
    return TaskData(
        name="chess_best_move",
        texts=[r["text"] for r in rows],
        labels=np.array([r["label"] for r in rows], dtype=np.int64),
        label_names=["not best", "best"],
        difficulty=np.array([r["difficulty"] for r in rows], dtype=float),
        prompt=BEST_MOVE_PROMPT,
        verbalizers=[" No", " Yes"],
        description=f"chess best move (Stockfish depth {depth}, gap >= {min_gap_cp} cp, seed {seed})",
    )


# --------------------------------------------------------------------------------------------------
# preference pairs


def describe_position(board: "chess.Board") -> str:
    """The position in words: side to move, every piece by square, castling rights, en passant."""
    chess = _chess()
    lines = [f"{'White' if board.turn == chess.WHITE else 'Black'} to move."]
    for color, name in ((chess.WHITE, "White"), (chess.BLACK, "Black")):
        parts = []
        for ptype in (chess.KING, chess.QUEEN, chess.ROOK, chess.BISHOP, chess.KNIGHT, chess.PAWN):
            squares = [chess.square_name(s) for s in sorted(board.pieces(ptype, color))]
            if squares:
                label = PIECE_NAMES[ptype] + ("s" if len(squares) > 1 else "")
                parts.append(f"{label} on {', '.join(squares)}")
        lines.append(f"{name}: {'; '.join(parts)}.")
    rights = []
    for color, name in ((chess.WHITE, "White"), (chess.BLACK, "Black")):
        sides = [s for s, ok in (("kingside", board.has_kingside_castling_rights(color)),
                                 ("queenside", board.has_queenside_castling_rights(color))) if ok]
        if sides:
            rights.append(f"{name} may still castle {' and '.join(sides)}")
    if rights:
        lines.append("; ".join(rights) + ".")
    if board.ep_square is not None and board.has_legal_en_passant():
        lines.append(f"En passant capture is possible on {chess.square_name(board.ep_square)}.")
    return "\n".join(lines)


def move_prompt(fen: str) -> str:
    """The prompt of a preference pair: the position in words and as FEN, asking for the best move (in SAN)."""
    board = parse_fen(fen)
    side = "White" if board.turn else "Black"
    return (f"{describe_position(board)}\nFEN: {board.fen()}\n"
            f"What is the best move for {side}? Answer with one move in standard algebraic notation (SAN).\n")


PAIR_COLUMNS = ("prompt", "chosen", "rejected", "margin_cp", "fen")


def move_preference_pairs(n: int, seed: int = 0, depth: int = 12, *, min_margin_cp: int = 50,
                          p_best: float = 0.5, min_ply: int = 8, max_ply: int = 40,
                          engine: Stockfish | None = None) -> list[dict[str, Any]]:
    """``n`` preference pairs over random-playout positions, preferred by Stockfish's gold reward.

    Each row has TRL's ``prompt``/``chosen``/``rejected`` (moves in SAN; ``chosen`` has the higher
    :meth:`Stockfish.move_value` at ``depth``), ``margin_cp`` (chosen value minus rejected value, at
    least ``min_margin_cp``; mates count ``MATE_CP``) and ``fen``, plus the moves in UCI and both values.
    With probability ``p_best`` one of the two moves is the engine's best move, otherwise both are
    random legal moves. Deterministic in ``seed``.
    """
    n = _check_int("n", n, 0)
    depth = _check_depth(depth)
    min_margin_cp = _check_int("min_margin_cp", min_margin_cp, 1, hint="use a margin >= 1 cp so the preference is strict")
    if not 0.0 <= float(p_best) <= 1.0:
        raise ConfigError("p_best", f"is {p_best!r}", "use a probability between 0 and 1")
    if engine is None:
        with Stockfish() as sf:
            return move_preference_pairs(n, seed, depth, min_margin_cp=min_margin_cp, p_best=p_best,
                                         min_ply=min_ply, max_ply=max_ply, engine=sf)
    chess = _chess()
    rng = random.Random(f"chess-pairs:{seed}")
    rows: list[dict[str, Any]] = []
    looked, limit = 0, 50 * n + 100
    for fen in iter_positions(seed, min_ply, max_ply):
        if len(rows) >= n:
            break
        if looked >= limit:
            raise DataError("min_margin_cp", f"only {len(rows)} of {n} pairs had a margin >= {min_margin_cp} cp "
                            f"after {looked} positions", "lower min_margin_cp or ask for fewer pairs")
        looked += 1
        board = chess.Board(fen)
        legal = sorted(m.uci() for m in board.legal_moves)
        if len(legal) < 2:
            continue
        if rng.random() < p_best:
            best = engine.analyse(fen, depth, 1)[0].uci
            a, b = best, rng.choice([m for m in legal if m != best])
        else:
            a, b = rng.sample(legal, 2)
        va, vb = engine.move_value(fen, a, depth), engine.move_value(fen, b, depth)
        if abs(va - vb) < min_margin_cp:
            continue
        (cu, cv), (ru, rv) = ((a, va), (b, vb)) if va > vb else ((b, vb), (a, va))
        rows.append({
            "prompt": move_prompt(fen), "chosen": board.san(chess.Move.from_uci(cu)),
            "rejected": board.san(chess.Move.from_uci(ru)), "margin_cp": cv - rv, "fen": fen,
            "chosen_uci": cu, "rejected_uci": ru, "chosen_cp": cv, "rejected_cp": rv, "depth": depth,
        })
    return rows


def cached_move_preference_pairs(n: int, seed: int = 0, depth: int = 12, **options: Any) -> list[dict[str, Any]]:
    """:func:`move_preference_pairs`, generated once per option set and cached as JSONL beside the
    ``chess_best_move`` rows, so a rerun of an experiment that reads them runs no engine search."""
    n, depth = _check_int("n", n, 0), _check_depth(depth)
    rows, _ = _cached_rows("move_pairs", {"n": n, "seed": int(seed), "depth": depth, **options}, n,
                           lambda sf: move_preference_pairs(n, seed, depth, engine=sf, **options))
    return rows


def save_pairs(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write preference rows as JSONL (atomically); ``datasets.load_dataset("json", data_files=path)`` reads them."""
    _validate_pairs(rows, str(path))
    return write_jsonl_atomic(Path(path), rows)


def load_pairs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read preference rows written by :func:`save_pairs`, checking the ``prompt/chosen/rejected`` columns."""
    rows = read_jsonl(path)
    _validate_pairs(rows, str(path))
    return rows


def pairs_dataset(rows: Sequence[dict[str, Any]]):  # -> datasets.Dataset
    """The rows as a Hugging Face ``datasets.Dataset`` (TRL's standard preference format)."""
    from datasets import Dataset

    _validate_pairs(rows, "pairs")
    return Dataset.from_list(list(rows))


def _validate_pairs(rows: Sequence[dict[str, Any]], where: str) -> None:
    if not rows:
        raise DataError(where, "has no preference rows", "generate pairs with move_preference_pairs(n > 0)")
    for i, row in enumerate(rows):
        missing = [c for c in PAIR_COLUMNS if c not in row]
        if missing:
            raise DataError(f"{where} row {i}", f"lacks column(s) {', '.join(missing)}",
                            f"give every row the columns {', '.join(PAIR_COLUMNS)}")
        if row["chosen"] == row["rejected"]:
            raise DataError(f"{where} row {i}.rejected", "equals chosen", "pair two different moves")


__all__ = [
    "MATE_CP", "Candidate", "Stockfish", "Puzzle", "parse_fen", "parse_move", "iter_positions", "random_positions",
    "depth_needed", "make_puzzle", "generate_puzzles", "best_move_rows", "best_move_task_rows", "chess_best_move",
    "describe_position", "move_prompt", "move_preference_pairs", "cached_move_preference_pairs", "save_pairs", "load_pairs", "pairs_dataset",
    "read_jsonl", "write_jsonl_atomic",
]
