"""Building blocks of the networks: field embeddings, block MLPs, MMoE, selectors,
and the one owner of output links and response losses (``hmum.nn.links``)."""
