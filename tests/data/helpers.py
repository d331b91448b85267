"""Helpers shared by the data tests (a plain module: no test module imports another)."""

from hmum.data.schema import FeatureSpec, ResponseSpec, Schema


def make_schema(**kw):
    base = dict(
        features=[FeatureSpec(name="region", kind="categorical"),
                  FeatureSpec(name="age", kind="numeric")],
        arms=["control", "t1", "t2"],
        responses=[ResponseSpec(name="usage_time", kind="continuous"),
                   ResponseSpec(name="views", kind="count")],
        user_id="user_id",
    )
    base.update(kw)
    return Schema(**base)
