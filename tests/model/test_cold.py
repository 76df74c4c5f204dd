"""The cold-item evaluation: whole items held out, factors mapped from content. On a small
generated set with a planted content->factor relation the map must beat random factors; the
dataset readers give known answers on small files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrec.model.cold import (
    MODELS,
    ColdConfig,
    evaluate_cold,
    lastfm_content,
    movielens_content,
    planted,
    rank,
)
from streamrec.model.params import Params

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_planted_relation_mapped_beats_random() -> None:
    data, content = planted(n_users=200, n_items=300, k=6, seed=3)
    cfg = ColdConfig(params=Params(factors=8, iterations=6), seeds=(0, 1), regularization=1.0)
    report = evaluate_cold(data, content, cfg, "planted")
    assert [r.held_items for r in report.runs] == [60, 60]
    for run in report.runs:
        assert set(run.metrics) == set(MODELS)
        mapped, rand = run.metrics["content map"], run.metrics["random"]
        for metric in ("recall@10", "ndcg@10", "recall@50", "ndcg@50"):
            assert mapped[metric] > rand[metric], (run.seed, metric, mapped, rand)
        for metric in ("recall@10", "ndcg@10"):  # (50 of 60 held-out items: near saturation)
            assert mapped[metric] > 2 * rand[metric], (run.seed, metric, mapped, rand)
        # content-predicted popularity is a real ranking the map should beat here too
        assert mapped["ndcg@10"] > run.metrics["popularity (content)"]["ndcg@10"]
    summary = report.summary()
    mean, std = summary["content map"]["ndcg@10"]
    values = [r.metrics["content map"]["ndcg@10"] for r in report.runs]
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert "popularity (oracle)" in report.table() and report.to_dict()["summary"]


def test_no_content_no_signal() -> None:
    """Content unrelated to the factors (shuffled between items): the map is no better than
    random by more than noise, so the planted test's margin is the content's doing."""
    data, content = planted(n_users=200, n_items=300, k=6, seed=3)
    ids = sorted(content)
    shuffled = dict(zip(ids, (content[i] for i in np.random.default_rng(0).permutation(ids)),
                        strict=True))  # fmt: skip
    cfg = ColdConfig(params=Params(factors=8, iterations=6), seeds=(0, 1), regularization=1.0)
    s = evaluate_cold(data, shuffled, cfg, "shuffled").summary()
    assert s["content map"]["ndcg@10"][0] < 1.6 * s["random"]["ndcg@10"][0] + 0.02


def test_rank_best_first_ties_by_index() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    assert rank(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]
    assert rank(scores, 10).shape == (2, 4)


def test_movielens_content(tmp_path: Path) -> None:
    d = tmp_path / "ml-latest-small"
    d.mkdir()
    (d / "movies.csv").write_text(
        "movieId,title,genres\n"
        '1,"Heat (1995)",Action|Crime|Thriller\n'
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Untitled,(no genres listed)\n",
        "utf-8",
    )
    got = movielens_content(tmp_path)
    assert got["1"].features == {"year": 1995.0}
    assert got["1"].categories == ("Action", "Crime", "Thriller")
    assert got["2"].categories == ("Comedy", "Drama", "Romance")
    assert got["3"].features == {} and got["3"].categories == ()


def test_lastfm_content_keeps_shared_tags(tmp_path: Path) -> None:
    (tmp_path / "tags.dat").write_text("tagID\ttagValue\r\n1\tRock\r\n2\tmy faves\r\n3\tjazz\r\n")
    lines = ["userID\tartistID\ttagID\tday\tmonth\tyear"]
    lines += [f"{u}\t10\t1\t1\t1\t2009" for u in range(4)]  # rock on 10, by 4 users
    lines += ["0\t10\t2\t1\t1\t2009", "0\t11\t2\t1\t1\t2009"]  # one user's own label
    lines += [f"{u}\t11\t3\t1\t1\t2009" for u in range(3)]  # jazz on 11, by 3 users
    (tmp_path / "user_taggedartists.dat").write_text("\r\n".join(lines) + "\r\n")
    got = lastfm_content(tmp_path, min_tag_users=3)
    assert got["10"].categories == ("rock",) and got["11"].categories == ("jazz",)
    # only the tags of the users it accepts: users 0 and 1 alone never reach 3 taggers
    assert lastfm_content(tmp_path, min_tag_users=3, taggers_of=lambda u: u in "01") == {}


@pytest.mark.skipif(not (SHARED / "ml-latest-small").is_dir(), reason="no ../shared/data")
def test_movielens_content_of_the_real_file() -> None:
    got = movielens_content(SHARED)
    assert len(got) == 9742
    assert got["1"].categories == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert got["1"].features == {"year": 1995.0}
    assert sum("year" in c.features for c in got.values()) > 9700


def test_similar_blend_helps_items_with_few_users_on_a_planted_relation() -> None:
    from streamrec.model.cold import evaluate_similar_blend

    data, content = planted(n_users=200, n_items=300, k=6, seed=3)
    cfg = ColdConfig(params=Params(factors=8, iterations=6), seeds=(0, 1), regularization=1.0)
    report = evaluate_similar_blend(data, content, cfg, min_interactions=8, weights=(0.0, 0.5))
    rare, frequent = report.items
    assert rare > 20 and frequent > 20
    assert report.rare[0.5]["ndcg@10"][0] > report.rare[0.0]["ndcg@10"][0] + 0.02
    assert set(report.frequent) == {0.0, 0.5} and "few users, 0.5" in report.table()


def test_spotify_genre_agreement_known_answer(tmp_path: Path) -> None:
    from streamrec.model.cold import SPOTIFY_FEATURES, spotify_genre_agreement

    header = ["artist", "song", *SPOTIFY_FEATURES, "genre"]
    rows = [",".join(header)]
    for n, (energy, genre) in enumerate([(0.1, "rock"), (0.12, "rock"), (0.9, "pop"),
                                         (0.92, "pop"), (0.9, "pop")]):  # fmt: skip
        values = ["200000", "2001", "0.5", str(energy)] + ["1"] * (len(SPOTIFY_FEATURES) - 4)
        rows.append(",".join([f"a{n % 4}", f"s{n % 4}", *values, genre]))  # last row: a dup
    (tmp_path / "songs_normalize.csv").write_text("\n".join(rows) + "\n")
    got = spotify_genre_agreement(tmp_path, ks=(1,))
    assert got["songs"] == 4  # the duplicate (artist, song) counted once
    assert got["same genres, content@1"] == 1.0  # each song's nearest is its genre twin
    assert got["same genres, random"] == pytest.approx(1 / 3)
