"""The fuzz campaign: random and semi-valid traffic against a real server per store.

DS_TRIO_FUZZ_SECONDS sets the duration per store (default 10), and
DS_TRIO_FUZZ_SEED replays a run (default: a fresh seed, printed). Each store's
campaign runs once per session; the comparison of the stores reuses both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .campaign import (
    CampaignResult,
    campaign_seconds,
    campaign_seed,
    compare_stores,
    reproduce,
    run_campaign,
)

SEED = campaign_seed()
RESULTS: dict[str, CampaignResult] = {}


def _result(store: str, tmp_path_factory: pytest.TempPathFactory) -> CampaignResult:
    if store not in RESULTS:
        print(f"\nfuzz seed {SEED}: {reproduce(SEED)}")
        workdir = Path(tmp_path_factory.mktemp(f"fuzz-{store}"))
        RESULTS[store] = run_campaign(store, SEED, campaign_seconds(), workdir)
        print(RESULTS[store].summary())
    return RESULTS[store]


@pytest.mark.parametrize("store", ["memory", "lmdb"])
def test_the_campaign_finds_no_fault(store: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    result = _result(store, tmp_path_factory)
    assert not result.failures, result.report()
    assert result.statuses["200"] + result.statuses["204"] > result.ops // 3, (
        f"too few operations succeeded; {reproduce(SEED)}\n{result.summary()}"
    )


def test_the_stores_answer_alike(tmp_path_factory: pytest.TempPathFactory) -> None:
    memory, lmdb = _result("memory", tmp_path_factory), _result("lmdb", tmp_path_factory)
    differences = compare_stores(memory, lmdb)
    assert not differences, "\n".join([reproduce(SEED), *differences[:20]])
