"""Structural compression: head and FFN-neuron masks, importance scores, physical shrinking
(`structure`), encoder MAC counting (`flops`), Kwon et al.'s mask search and rearrangement
(`search`) and layer-wise least-squares mask tuning (`tune`). The recipes live in
`workbench.recipes.prune` (`structured_prune`, `retraining_free_prune`)."""
