"""The chess domain: Stockfish ground truth, reproducible puzzles, the W2S task and preference pairs."""

from __future__ import annotations

import numpy as np
import pytest

from superalign.assets import locate

pytestmark = pytest.mark.assets

chess = pytest.importorskip("chess", reason="python-chess is not installed (pip install 'superalign[chess]')")
if locate("stockfish") is None:
    pytest.skip("Stockfish is not installed (superalign assets install stockfish)", allow_module_level=True)

from superalign.data import chess as sc  # noqa: E402
from superalign.errors import ConfigError, DataError  # noqa: E402

DEPTH = 6  # shallow: every search takes milliseconds

# (FEN, the one mating move): back-rank mates for either side, a smothered mate, scholar's mate, fool's mate
MATE_IN_ONE = [
    ("6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1", "a1a8"),
    ("r5k1/5ppp/8/8/8/8/5PPP/6K1 b - - 0 1", "a8a1"),
    ("6rk/6pp/8/6N1/8/8/8/6K1 w - - 0 1", "g5f7"),
    ("r1bqkbnr/pppp1ppp/2n5/4p3/2B1P3/5Q2/PPPP1PPP/RNB1K1NR w KQkq - 4 4", "f3f7"),
    ("rnbqkbnr/pppp1ppp/8/4p3/6P1/5P2/PPPPP2P/RNBQKBNR b KQkq - 0 2", "d8h4"),
]


@pytest.fixture(scope="module")
def sf():
    with sc.Stockfish() as engine:
        yield engine


def mating_moves(fen: str) -> list[str]:
    board = chess.Board(fen)
    out = []
    for move in board.legal_moves:
        board.push(move)
        if board.is_checkmate():
            out.append(move.uci())
        board.pop()
    return out


@pytest.mark.parametrize("fen,mate", MATE_IN_ONE)
def test_unique_mate_in_one_is_best_and_most_valuable(sf, fen, mate):
    board = chess.Board(fen)
    assert board.is_valid() and mating_moves(fen) == [mate]  # the position really has one mating move

    top = sf.analyse(fen, DEPTH, multipv=2)
    assert top[0].uci == mate and top[0].mate == 1 and top[0].cp == sc.MATE_CP - 1
    assert top[0].san.endswith("#") and top[1].cp < top[0].cp

    values = sf.move_values(fen, depth=4)  # every legal move
    assert set(values) == {m.uci() for m in board.legal_moves}
    assert values[mate] == sc.MATE_CP - 1
    assert all(v < values[mate] for m, v in values.items() if m != mate)

    puzzle = sc.make_puzzle(sf, fen, DEPTH, min_gap_cp=100)
    assert puzzle is not None and puzzle.best_uci == mate and puzzle.gap_cp >= 100
    assert 1 <= puzzle.depth_needed <= puzzle.depth == DEPTH and len(puzzle.best_by_depth) == DEPTH
    rows = sc.best_move_rows([puzzle, puzzle], seed=0)  # one row of each class
    assert sorted(r["label"] for r in rows) == [0, 1]
    for r in rows:
        assert (r["candidate_uci"] == mate) == (r["label"] == 1)
        assert r["text"] == f"Position (FEN): {puzzle.fen}\nCandidate move: {r['candidate_san']}"


def test_bad_input_names_the_field(sf):
    with pytest.raises(DataError, match="fen") as e:
        sf.analyse("not a fen", DEPTH)
    assert "Fix:" in str(e.value)
    with pytest.raises(DataError, match="not a legal chess position"):
        sf.analyse("8/8/8/8/8/8/8/8 w - - 0 1", DEPTH)  # no kings
    with pytest.raises(DataError, match="move_uci.*legal here"):
        sf.move_value(MATE_IN_ONE[0][0], "e2e4", DEPTH)
    with pytest.raises(ConfigError, match="depth"):
        sf.analyse(MATE_IN_ONE[0][0], 0)
    with pytest.raises(ConfigError, match="max_ply"):
        sc.random_positions(2, seed=0, min_ply=10, max_ply=5)
    assert sf.analyse("7k/5Q2/6K1/8/8/8/8/8 b - - 0 1", DEPTH) == []  # stalemate: nothing to rank


def test_positions_and_puzzles_are_reproducible():
    a, b = sc.random_positions(8, seed=3), sc.random_positions(8, seed=3)
    assert a == b and len(set(a)) == 8 and a != sc.random_positions(8, seed=4)
    assert all(not chess.Board(f).is_game_over() for f in a)

    with sc.Stockfish() as e1, sc.Stockfish() as e2:  # separate processes: determinism, not caching
        p1 = sc.generate_puzzles(3, seed=5, depth=DEPTH, engine=e1)
        p2 = sc.generate_puzzles(3, seed=5, depth=DEPTH, engine=e2)
        other = sc.generate_puzzles(3, seed=6, depth=DEPTH, engine=e1)
        assert [p.to_dict() for p in p1] == [p.to_dict() for p in p2]
        assert [p.fen for p in p1] != [p.fen for p in other]
        for p in p1:
            assert p.gap_cp >= 100 and p.best_uci != p.second_uci
            assert e2.analyse(p.fen, DEPTH)[0].uci != p.second_uci  # multipv=1 agrees it is not the runner-up
            assert sc.Puzzle.from_dict(p.to_dict()) == p


def test_task_loads_balanced_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERALIGN_HOME", str(tmp_path))
    from superalign.data import list_tasks, load_task

    spec = next(s for s in list_tasks() if s.name == "chess_best_move")
    assert spec.asset == "stockfish" and spec.difficulty == "search depth needed"

    task = load_task("chess_best_move", n_positions=10, depth=DEPTH)
    assert len(task) == 10 and np.bincount(task.labels).tolist() == [5, 5]
    assert task.label_names == ["not best", "best"] and task.verbalizers == [" No", " Yes"]
    assert task.difficulty is not None and ((task.difficulty >= 1) & (task.difficulty <= DEPTH)).all()
    assert all(t.startswith("Position (FEN): ") and "\nCandidate move: " in t for t in task.texts)
    assert "Answer:" in task.render_prompt(0)
    cached = list((tmp_path / "data" / "chess").glob("chess_best_move-*.jsonl"))
    assert len(cached) == 1 and not list((tmp_path / "data" / "chess").glob(".*tmp"))

    def no_generation(*a, **k):
        raise AssertionError("the cached rows should have been read")

    monkeypatch.setattr(sc, "generate_puzzles", no_generation)
    again = load_task("chess_best_move", n_positions=10, depth=DEPTH)
    assert again.fingerprint() == task.fingerprint()
    monkeypatch.undo()
    monkeypatch.setenv("SUPERALIGN_HOME", str(tmp_path))

    other = load_task("chess_best_move", n_positions=4, depth=DEPTH, position_seed=1)
    assert len(other) == 4 and np.bincount(other.labels).tolist() == [2, 2]
    assert len(list((tmp_path / "data" / "chess").glob("chess_best_move-*.jsonl"))) == 2


def test_preference_pairs_follow_the_gold_reward(sf, tmp_path):
    rows = sc.move_preference_pairs(5, seed=0, depth=DEPTH, engine=sf)
    assert len(rows) == 5
    with sc.Stockfish() as fresh:  # the preference holds when re-scored from scratch
        for r in rows:
            board = chess.Board(r["fen"])
            chosen, rejected = board.parse_san(r["chosen"]), board.parse_san(r["rejected"])
            assert chosen != rejected and chosen.uci() == r["chosen_uci"]
            vc, vr = fresh.move_value(r["fen"], chosen.uci(), DEPTH), fresh.move_value(r["fen"], rejected.uci(), DEPTH)
            assert vc > vr and vc - vr == r["margin_cp"] >= 50
            assert r["prompt"].startswith(("White to move.", "Black to move.")) and f"FEN: {r['fen']}" in r["prompt"]
    assert rows == sc.move_preference_pairs(5, seed=0, depth=DEPTH, engine=sf)

    path = sc.save_pairs(rows, tmp_path / "pairs.jsonl")
    assert sc.load_pairs(path) == rows
    ds = sc.pairs_dataset(rows)
    assert {"prompt", "chosen", "rejected", "margin_cp", "fen"} <= set(ds.column_names) and len(ds) == 5
    with pytest.raises(DataError, match="rejected"):
        sc.save_pairs([{k: v for k, v in rows[0].items() if k != "rejected"}], tmp_path / "bad.jsonl")
