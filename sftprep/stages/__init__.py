"""The build's stages, one module each, in the order the pipeline runs them:

sources -> formats -> render (chat_template sandbox) -> masks (tokenize) -> length_policy ->
spill -> split -> pack -> shards. `row_encoder` runs formats/render/masks over a chunk of rows
(in a worker process or in this one); `tokenizer` loads the tokenizer without transformers.
Stages are functions over rows with no printing; only `sources` and `shards` touch the data on disk.
"""
