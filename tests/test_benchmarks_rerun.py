"""`benchmarks.rerun`: one variant measured again replaces its records and nothing else."""

from __future__ import annotations

import pytest

from benchmarks import results as res
from benchmarks import summary
from benchmarks.rerun import rerun
from marconi.errors import UserError

# every test reruns a variant of the smoke suite: an end-to-end run
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(smoke_run) -> dict:
    return res.load(smoke_run)                        # conftest.py: one run per session


def _strip(obj):
    """Without timings (`seconds`, and α-tuning times inside `params`)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("seconds", "tuning_seconds")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_rerun_replaces_only_the_variant_and_notes_it(smoke, tmp_path):
    again = rerun(smoke, "layer-mix", "Transformer", tmp_path, jobs=1)
    model = next(v["model"] for v in smoke["variants"] if v["label"] == "Transformer")
    replaced = 0
    for part in ("references", "records"):
        old, new = smoke[part], again[part]
        assert len(old) == len(new)
        mine = [i for i, r in enumerate(old) if r["model"] == model and
                r["study"] == "layer-mix"]
        assert mine                                   # the variant's records were there
        replaced += len(mine)
        others = [i for i in range(len(old)) if i not in mine]
        assert [old[i] for i in others] == [new[i] for i in others]      # untouched
        # the same code measures the same numbers (timings aside)
        assert _strip([old[i] for i in mine]) == _strip([new[i] for i in mine])
    (note,) = again["meta"]["reruns"]
    assert note["what"] == "layer-mix Transformer" and note["records"] == replaced
    assert "re-measured since: layer-mix Transformer" in "\n".join(summary.meta_block(again))
    assert "reruns" not in smoke["meta"]              # the input is left alone


def test_rerun_refuses_an_unknown_variant(smoke, tmp_path):
    with pytest.raises(UserError, match="--variant: 'Mamba'; expected one of 1:8, Transformer"):
        rerun(smoke, "layer-mix", "Mamba", tmp_path, jobs=1)
