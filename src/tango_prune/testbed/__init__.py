"""A small, real Video LLM trained here on procedural video QA, so pruning accuracy can be measured on a CPU.

- :mod:`.data`: deterministic clip + question generator (numpy), mp4 writing/reading via PyAV.
- :mod:`.model`: the ``LlavaOnevisionForConditionalGeneration`` configuration, word-level tokenizer and
  :class:`~.model.TestbedProcessor` (prompt format, pixel normalisation).
- :mod:`.train`: the training recipe behind ``tango-prune testbed train``.
- :mod:`.evaluate`: accuracy per method and retention behind ``tango-prune eval --benchmark testbed``.
- :mod:`.demo`: the with/without-pruning demo and the kept-token picture.
"""
