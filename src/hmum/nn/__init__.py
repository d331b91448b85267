"""Building blocks of the networks: field embeddings, block MLPs, MMoE, selectors,
and the one owner of output links and response losses (``hmum.nn.links``)."""

from hmum._lazy import lazy_exports

_EXPORTS = {
    "FieldEmbedding": "hmum.nn.layers",
    "FieldSelector": "hmum.nn.layers",
    "MLP": "hmum.nn.layers",
    "BlockLinear": "hmum.nn.layers",
    "BlockMLP": "hmum.nn.layers",
    "BlockMMoE": "hmum.nn.layers",
    "LossConfig": "hmum.nn.links",
    "resolve_heads": "hmum.nn.links",
    "apply_link": "hmum.nn.links",
    "link_bias": "hmum.nn.links",
    "deviance": "hmum.nn.links",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
