"""Ranking metrics on cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from streamrec.model.metrics import hit_matrix, ranking_metrics


def _relevant(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = sp.lil_matrix((len(rows), n_items), dtype=np.bool_)
    for b, items in enumerate(rows):
        for i in items:
            r[b, i] = True
    return r.tocsr()


def test_metrics_of_a_known_ranking() -> None:
    # One user, list [0, 1, 2, 3], relevant {1, 3}: hits at ranks 2 and 4.
    recs = np.array([[0, 1, 2, 3]])
    m = ranking_metrics(recs, _relevant([[1, 3]], 5), ks=(4,))
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@4"] == pytest.approx(dcg / idcg)  # 0.6509...
    assert m["ndcg@4"] == pytest.approx(0.65092, abs=1e-5)
    assert m["precision@4"] == pytest.approx(0.5)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m["coverage@4"] == pytest.approx(4 / 5)
    assert m["users"] == 1


def test_metrics_average_over_users_cut_at_k_and_skip_users_without_relevant_items() -> None:
    recs = np.array([[2, 0, 1], [4, -1, -1], [0, 1, 2]])
    rel = _relevant([[2, 1, 3, 4], [0], []], 6)  # the third user has nothing relevant
    m = ranking_metrics(recs, rel, ks=(1, 3))
    assert m["users"] == 2
    # user 0: hit, miss, hit (4 relevant); user 1: miss, then a short list.
    assert m["precision@1"] == pytest.approx((1 + 0) / 2)
    assert m["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["recall@3"] == pytest.approx((2 / 4 + 0) / 2)
    ndcg0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert m["ndcg@3"] == pytest.approx(ndcg0 / 2)
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 3) / 2)
    # coverage: items listed to the evaluated users, {0, 1, 2, 4} of 6 at 3, {2, 4} at 1
    assert m["coverage@3"] == pytest.approx(4 / 6)
    assert m["coverage@1"] == pytest.approx(2 / 6)


def test_perfect_and_empty_rankings() -> None:
    rel = _relevant([[3, 1]], 4)
    assert ranking_metrics(np.array([[1, 3, 0]]), rel, ks=(3,))["ndcg@3"] == pytest.approx(1.0)
    assert ranking_metrics(np.array([[-1, -1, -1]]), rel, ks=(3,))["ndcg@3"] == 0.0
    with pytest.raises(ValueError, match="shorter"):
        ranking_metrics(np.array([[1]]), rel, ks=(3,))


def test_hit_matrix_ignores_padding() -> None:
    rel = _relevant([[0], [2]], 3)
    hits = hit_matrix(np.array([[0, -1], [-1, 2]]), rel)
    assert hits.tolist() == [[True, False], [False, True]]
