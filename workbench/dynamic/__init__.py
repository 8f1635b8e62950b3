"""Dynamic inference beyond the torch reference (`workbench.models.dynamic`): the latency cost
models (`latency`) and the length-configuration search with its accuracy-latency front
(`search`), used by the `length_search` recipe."""
