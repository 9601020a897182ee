"""An architecture plugin: Arcee (AFM-4.5B and kin), which modelport does not ship. One file, all data.

Load it with `modelport convert ... --plugin-path examples/plugins`, or install a package that names
this module under the entry point group `modelport.architectures`:

    [project.entry-points."modelport.architectures"]
    arcee = "my_package.arcee"

What Arcee is, as data: Llama's attention (llama.cpp runs it with interleaved rope, so Q/K rows are
permuted) with a gateless MLP, up then down through ReLU², which llama.cpp runs as its ARCEE
architecture. The tensor templates are checked against transformers by the spec tests, and the
`tiny` config lets `modelport.samples.save_model(path, "arcee")` build a test model.
"""
from modelport import ArchitectureSpec, register_architecture
from modelport.architectures.families.llama import LAYER_NORMS, MLP_BIAS, PERMUTE_QK, TINY, attention, decoder
from modelport.architectures.gguf_mapping import TEXT_KEYS, GGUFMapping
from modelport.architectures.tensors import linear

MLP = (*linear("model.layers.{L}.mlp.up_proj", "ffn", "hidden", MLP_BIAS),
       *linear("model.layers.{L}.mlp.down_proj", "hidden", "ffn", MLP_BIAS))

SPEC = register_architecture(ArchitectureSpec(
    model_type="arcee",
    tensors=decoder("ArceeForCausalLM", (*attention(), *MLP, *LAYER_NORMS)),
    onnx="decoder",
    gguf=GGUFMapping(arch="ARCEE", metadata=TEXT_KEYS, rules=PERMUTE_QK),
    tiny=dict(TINY, tie_word_embeddings=False),
))
