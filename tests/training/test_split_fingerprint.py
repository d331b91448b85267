"""Data-parallel training records the fingerprint of the table its hash split indexes
into, so `--test-split` refuses another table there too (issue 13 #3)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hmum.data.split import hash_split
from hmum.data.validate import data_fingerprint, load_experiment
from hmum.exceptions import DataError
from hmum.models.registry import load_estimator
from hmum.training import distributed as hd
from hmum.workflows.train import SPLIT, held_out_rows
from tests.synth import make_experiment


def test_distributed_artifact_records_its_table(tmp_path):
    d = make_experiment(n=1200, K=2, R=1, seed=2)
    cols = {n: d.features.column(n) for n in d.features.column_names}
    cols["arm"], cols["y0"] = pa.array(d.arm), pa.array(d.y[:, 0])
    pq.write_table(pa.table(cols), tmp_path / "data.parquet", row_group_size=500)
    d.schema.to_json(tmp_path / "schema.json")
    job = hd.DistributedJob(
        data=tmp_path / "data.parquet", data_schema=json.loads((tmp_path / "schema.json")
                                                               .read_text()),
        trainer={"max_epochs": 1, "batch_size": 512}, fractions=SPLIT, out=tmp_path / "m")
    est = hd.run(job, 1)
    back = load_estimator(tmp_path / "m")
    table = load_experiment(tmp_path / "data.parquet", d.schema)
    # streamed in row groups by the worker, equal to the fingerprint of the loaded table
    assert back.data_fingerprint_ == data_fingerprint(table) == est.data_fingerprint_
    np.testing.assert_array_equal(
        held_out_rows(back, table), np.flatnonzero(hash_split(np.arange(1200), SPLIT, 0) == 2))
    with pytest.raises(DataError, match=r"not the table the model was split from \(1,100 rows"):
        held_out_rows(back, table.take(np.arange(1100)))
