"""An architecture plugin: Nemotron (Minitron, Nemotron-4), which modelport does not ship. One file, all data.

Load it with `modelport convert ... --plugin-path examples/plugins`, or install a package that names
this module under the entry point group `modelport.architectures`:

    [project.entry-points."modelport.architectures"]
    nemotron = "my_package.nemotron"

What Nemotron is, as data: attention with partial NEOX rope (no Q/K permutation), a gateless MLP, up then
down through ReLU², and LayerNorm1P (biased LayerNorms whose weight is used as 1 + w), which llama.cpp
runs as its NEMOTRON architecture with the 1 added to the stored weights (`norm_offset`, a rule with its
inverse). The tensor templates are checked against transformers by the spec tests, and the `tiny` config
lets `modelport.samples.save_model(path, "nemotron")` build a test model.
"""
from modelport import ArchitectureSpec, register_architecture
from modelport.architectures.families.llama import TINY, attention, decoder
from modelport.architectures.gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from modelport.architectures.tensors import linear, norm

P = "model.layers.{L}"
BIAS = "get('mlp_bias', False)"
LAYER = (*attention(), *linear(f"{P}.mlp.up_proj", "ffn", "hidden", BIAS),
         *linear(f"{P}.mlp.down_proj", "hidden", "ffn", BIAS),
         *norm(f"{P}.input_layernorm", bias=True), *norm(f"{P}.post_attention_layernorm", bias=True))

SPEC = register_architecture(ArchitectureSpec(
    model_type="nemotron",
    tensors=decoder("NemotronForCausalLM", LAYER, head=(*norm("model.norm", bias=True),
                                                        *linear("lm_head", "vocab", "hidden"))),
    onnx="decoder",
    gguf=GGUFMapping(arch="NEMOTRON", norm_offset=1.0, metadata={
        **{key: value for key, value in TEXT_KEYS.items() if "rms" not in key},
        "{arch}.attention.layer_norm_epsilon": Key("norm_eps", "f32"),      # Nemotron's name for the LayerNorm eps
    }),
    tiny=dict({k: v for k, v in TINY.items() if k != "rms_norm_eps"}, norm_eps=1e-5, tie_word_embeddings=False),
))
