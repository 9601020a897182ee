"""Arcee (AFM-4.5B): Llama's attention (llama.cpp runs it with interleaved rope, so Q/K rows are permuted)
with a gateless MLP, up then down through ReLU²; llama.cpp's ARCEE."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import linear
from .llama import LAYER_NORMS, MLP_BIAS, PERMUTE_QK, TINY, attention, decoder

MLP = (*linear("model.layers.{L}.mlp.up_proj", "ffn", "hidden", MLP_BIAS),
       *linear("model.layers.{L}.mlp.down_proj", "hidden", "ffn", MLP_BIAS))

SPEC = register_architecture(ArchitectureSpec(
    model_type="arcee",
    tensors=decoder("ArceeForCausalLM", (*attention(), *MLP, *LAYER_NORMS)),
    onnx="decoder",
    gguf=GGUFMapping(arch="ARCEE", metadata=TEXT_KEYS, rules=PERMUTE_QK,
                     requires={"get('hidden_act', 'relu2') == 'relu2'": "llama.cpp's Arcee MLP is ReLU²"}),
    tiny=dict(TINY, tie_word_embeddings=False),
))
