"""Stockfish as a reproducible gold supervisor, and seeded random chess positions.

:class:`Stockfish` is a context manager over ``chess.engine.SimpleEngine.popen_uci`` set up for
reproducibility (one thread, a fixed hash size, the hash cleared before every search, fixed depth);
:meth:`~Stockfish.analyse` ranks candidate moves and :meth:`~Stockfish.move_value` is the gold reward
of a move. :func:`iter_positions` / :func:`random_positions` give positions from seeded random legal
playouts. The data built on them (puzzles, the ``chess_best_move`` task, move preference pairs) is in
:mod:`superalign.data.chess`, which re-exports these names.
"""

from __future__ import annotations

import os
import random
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from superalign.errors import AssetMissingError, ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import chess
    import chess.engine

MATE_CP = 100_000
"""Centipawn value of "mate now"; mate in ``k`` moves scores ``MATE_CP - k`` (``-MATE_CP + k`` when mated)."""

DEFAULT_HASH_MB = 16



def _chess():
    """Import python-chess, or say how to install it."""
    try:
        import chess
        import chess.engine  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise AssetMissingError(
            "the chess domain needs the PyPI package 'chess' (python-chess), which is not installed. "
            "Fix: pip install 'superalign[chess]'   (or pip install 'chess>=1.10')"
        ) from exc
    return chess


# --------------------------------------------------------------------------------------------------
# input checking


def parse_fen(fen: str, field_name: str = "fen") -> "chess.Board":
    """A board from ``fen``, or a :class:`DataError` naming ``field_name`` when it is not a legal position."""
    chess = _chess()
    if not isinstance(fen, str) or not fen.strip():
        raise DataError(field_name, f"is {fen!r}, not a FEN string",
                        "pass a FEN such as 'rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1'")
    try:
        board = chess.Board(fen.strip())
    except ValueError as exc:
        raise DataError(field_name, f"'{fen}' is not a valid FEN ({exc})",
                        "pass the six FEN fields: pieces, side to move, castling, en passant, halfmove, fullmove") from None
    if not board.is_valid():
        raise DataError(field_name, f"'{fen}' is not a legal chess position ({board.status()!r})",
                        "pass a position reachable in a game: one king each, side not to move not in check, "
                        "no pawns on the first or last rank")
    return board


def parse_move(board: "chess.Board", move: str, field_name: str = "move_uci") -> "chess.Move":
    """The legal move ``move`` (UCI like ``e2e4``, or SAN like ``Nf3``) on ``board``, or a :class:`DataError`."""
    chess = _chess()
    try:
        mv = chess.Move.from_uci(move)
    except (ValueError, TypeError):
        try:
            mv = board.parse_san(move)
        except (ValueError, TypeError):
            mv = None
    if mv is None or mv not in board.legal_moves:
        legal = " ".join(sorted(m.uci() for m in board.legal_moves)) or "(none: the game is over)"
        raise DataError(field_name, f"{move!r} is not a legal move in '{board.fen()}'",
                        f"pass a legal move in UCI notation; legal here: {legal}")
    return mv


def _check_int(name: str, value: Any, lo: int, hi: int | None = None, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ConfigError(name, f"is {value!r}, must be an integer {rng}", hint or f"pass an integer {rng}")
    return int(value)


def _check_depth(depth: Any, name: str = "depth") -> int:
    return _check_int(name, depth, 1, 60, "use a search depth between 1 and 60 (12 takes well under a second)")


# --------------------------------------------------------------------------------------------------
# the engine


@dataclass(frozen=True)
class Candidate:
    """One ranked root move of an analysis.

    ``cp`` is the score in centipawns from the side to move, with a mate in ``k`` moves mapped to ``±(MATE_CP - k)``;
    ``mate`` is the signed number of moves to mate (positive: the mover mates) or None.
    """

    rank: int
    uci: str
    san: str
    cp: int
    mate: int | None
    depth: int
    pv: tuple[str, ...] = ()


_OPEN_ENGINES: "weakref.WeakSet[Stockfish]" = weakref.WeakSet()
_EXIT_HOOK = False


def _close_open_engines() -> None:
    for engine in list(_OPEN_ENGINES):
        engine.close()


def _register_exit_hook() -> None:
    """Close engines left open before the interpreter joins threads at exit.

    python-chess runs each engine on a non-daemon thread, so an engine nobody closed would keep the
    process from exiting; ``atexit`` runs too late for that, ``threading``'s exit hook does not.
    """
    global _EXIT_HOOK
    if not _EXIT_HOOK:
        _EXIT_HOOK = True
        hook = getattr(threading, "_register_atexit", None)
        if hook is not None:
            hook(_close_open_engines)


class Stockfish:
    """Reproducible Stockfish: one thread, a fixed hash, the hash cleared before each search, fixed depth.

    Use as a context manager (``with Stockfish() as sf: sf.analyse(fen, 12)``) or call :meth:`close`;
    an engine left open is closed when the interpreter exits. Results are cached in memory (LRU over
    ``cache_size`` searches), so asking again for a position costs nothing. With these settings a
    search at a given depth gives the same moves and scores on every run.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, threads: int = 1,
                 hash_mb: int = DEFAULT_HASH_MB, cache_size: int = 50_000) -> None:
        chess = _chess()
        if path is None:
            from superalign.assets import require

            path = require("stockfish", "the chess engine wrapper")
        self.path = str(path)
        self.threads = _check_int("threads", threads, 1, 1024)
        self.hash_mb = _check_int("hash_mb", hash_mb, 1, 1 << 20)
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._cache_size = _check_int("cache_size", cache_size, 0)
        self.searches = 0  # number of engine searches actually run (cache misses)
        try:
            self._engine = chess.engine.SimpleEngine.popen_uci(self.path)
        except (OSError, chess.engine.EngineError) as exc:
            raise AssetMissingError(f"cannot start Stockfish at {self.path} ({exc}). "
                                    "Fix: superalign assets install stockfish, or set STOCKFISH_PATH") from exc
        try:
            self._engine.configure({"Threads": self.threads, "Hash": self.hash_mb})
        except Exception:
            self._engine.quit()
            self._engine = None
            raise
        self.version: str = str(self._engine.id.get("name", "unknown"))
        _register_exit_hook()
        _OPEN_ENGINES.add(self)

    # ---- lifetime
    def __enter__(self) -> "Stockfish":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the engine process (idempotent)."""
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            try:
                engine.quit()
            except Exception:  # already dead: nothing to clean up
                engine.close()

    def __del__(self) -> None:  # a forgotten close() should not leave a process behind
        try:
            self.close()
        except Exception:
            pass

    # ---- searches
    def _remember(self, key: tuple, value: Any) -> Any:
        if self._cache_size:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value

    def _search(self, board: "chess.Board", depth: int, multipv: int,
                root_moves: Sequence["chess.Move"] | None = None) -> dict[int, list[Candidate]]:
        """One iterative-deepening search; the exact (non-bound) lines at every completed depth."""
        chess = _chess()
        if self._engine is None:
            raise RuntimeError("this Stockfish wrapper is closed; open a new one (with Stockfish() as sf: ...)")
        self.searches += 1
        lines: dict[int, dict[int, Any]] = {}
        # a fresh `game` object makes python-chess send ucinewgame, which clears Stockfish's hash:
        # every search then starts from the same state, so results do not depend on call order
        with self._engine.analysis(board, chess.engine.Limit(depth=depth), multipv=multipv, game=object(),
                                   root_moves=list(root_moves) if root_moves is not None else None) as analysis:
            for info in analysis:
                if "score" not in info or "pv" not in info or not info["pv"] or "depth" not in info:
                    continue
                if info.get("lowerbound") or info.get("upperbound"):
                    continue
                lines.setdefault(int(info["depth"]), {})[int(info.get("multipv", 1))] = info
        out: dict[int, list[Candidate]] = {}
        for d in sorted(lines):
            cands = []
            for rank in sorted(lines[d]):
                info = lines[d][rank]
                score = info["score"].pov(board.turn)
                move = info["pv"][0]
                cands.append(Candidate(
                    rank=rank, uci=move.uci(), san=board.san(move), cp=int(score.score(mate_score=MATE_CP)),
                    mate=score.mate(), depth=d, pv=tuple(m.uci() for m in info["pv"]),
                ))
            out[d] = cands
        return out

    def analyse_by_depth(self, fen: str, depth: int, multipv: int = 1) -> dict[int, list[Candidate]]:
        """Ranked candidates at every depth 1..``depth`` of one iterative-deepening search (cached).

        Empty when the game is over in ``fen``. ``multipv`` larger than the number of legal moves
        gives one candidate per legal move.
        """
        board = parse_fen(fen)
        depth = _check_depth(depth)
        multipv = _check_int("multipv", multipv, 1, 500, "ask for 1 to 500 candidate moves")
        key = ("analyse", board.fen(), depth, multipv)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = {} if board.is_game_over(claim_draw=False) else self._search(board, depth, multipv)
        return self._remember(key, result)

    def analyse(self, fen: str, depth: int = 12, multipv: int = 1) -> list[Candidate]:
        """The engine's ``multipv`` best moves at ``depth``, best first, with scores (centipawns, mover's view).

        Empty when the game is over in ``fen``.
        """
        by_depth = self.analyse_by_depth(fen, depth, multipv)
        return by_depth[max(by_depth)] if by_depth else []

    def move_value(self, fen: str, move_uci: str, depth: int = 12) -> int:
        """The gold reward of a move: the engine's evaluation after ``move_uci`` from the mover's view.

        Computed by a ``depth`` search restricted to that root move (``searchmoves``), so values of
        different moves in one position are on the same scale as :meth:`analyse`'s scores. Mates
        map to ``±(MATE_CP - k)`` for a mate in ``k`` moves. Deterministic and cached.
        """
        board = parse_fen(fen)
        move = parse_move(board, move_uci)
        depth = _check_depth(depth)
        key = ("value", board.fen(), move.uci(), depth)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        by_depth = self._search(board, depth, 1, root_moves=[move])
        if not by_depth:  # cannot happen with a legal move, but never return a made-up number
            raise RuntimeError(f"Stockfish returned no score for {move.uci()} in '{board.fen()}'")
        return self._remember(key, by_depth[max(by_depth)][0].cp)

    def move_values(self, fen: str, moves: Sequence[str] | None = None, depth: int = 12) -> dict[str, int]:
        """:meth:`move_value` for several moves of one position (all legal moves when ``moves`` is None)."""
        board = parse_fen(fen)
        if moves is None:
            moves = sorted(m.uci() for m in board.legal_moves)
        return {parse_move(board, m, "moves").uci(): self.move_value(fen, m, depth) for m in moves}


# --------------------------------------------------------------------------------------------------
# positions


def iter_positions(seed: int = 0, min_ply: int = 8, max_ply: int = 40, *,
                   max_failures: int = 10_000) -> Iterator[str]:
    """An endless stream of distinct FENs from seeded random legal playouts from the initial position.

    Each playout draws its length uniformly from ``min_ply..max_ply`` and a uniformly random legal
    move at each ply (moves sorted by UCI, so the stream depends on ``seed`` alone). Playouts that
    end the game (mate, stalemate, insufficient material, 75-move or fivefold rule) before or at
    their last ply are skipped, and so are positions already produced (compared without move counters).
    """
    chess = _chess()
    seed = _check_int("seed", seed, 0)
    min_ply = _check_int("min_ply", min_ply, 0)
    max_ply = _check_int("max_ply", max_ply, 0)
    if max_ply < min_ply:
        raise ConfigError("max_ply", f"is {max_ply}, below min_ply={min_ply}", "make max_ply >= min_ply")
    rng = random.Random(seed)
    seen: set[str] = set()
    failures = 0
    while True:
        board = chess.Board()
        plies = rng.randint(min_ply, max_ply)
        for _ in range(plies):
            if board.is_game_over():
                break
            board.push(rng.choice(sorted(board.legal_moves, key=lambda m: m.uci())))
        key = board.epd()
        if board.is_game_over() or key in seen:
            failures += 1
            if failures > max_failures:
                raise DataError("min_ply/max_ply", f"random playouts of {min_ply}..{max_ply} plies gave no new "
                                f"position in {max_failures} tries ({len(seen)} found)",
                                "widen the ply range (e.g. min_ply=8, max_ply=40)")
            continue
        failures = 0
        seen.add(key)
        yield board.fen()


def random_positions(n: int, seed: int = 0, min_ply: int = 8, max_ply: int = 40) -> list[str]:
    """``n`` distinct FENs from seeded random playouts (see :func:`iter_positions`); same seed, same list."""
    n = _check_int("n", n, 0)
    it = iter_positions(seed, min_ply, max_ply)
    return [next(it) for _ in range(n)]


# --------------------------------------------------------------------------------------------------
# puzzles
