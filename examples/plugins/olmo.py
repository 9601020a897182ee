"""An architecture plugin: OLMo (allenai/OLMo-*-hf), which modelport does not ship.

Load it with `modelport convert ... --plugin-path examples/plugins`, or install a package that names
this module under the entry point group `modelport.architectures`:

    [project.entry-points."modelport.architectures"]
    olmo = "my_package.olmo:olmo"

What OLMo needs, as data: llama.cpp runs it as its OLMO architecture with Llama's interleaved rope
(so Q/K rows are permuted); its layer norms have no weights at all (transformers' OlmoLayerNorm is
parameter-free), so there are no norm tensors to map; llama.cpp reads a plain layer-norm epsilon
(OLMo fixes it at 1e-5) and an optional clamp of Q/K/V (`clip_qkv`).
"""
from modelport import ArchitectureSpec, register_architecture
from modelport.architectures.gguf_mapping import GGUFMapping, core_metadata


def olmo_metadata(writer, hp) -> None:
    core_metadata(writer, hp)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_layer_norm_eps(1e-5)
    if hp.raw.get("clip_qkv") is not None:
        writer.add_clamp_kqv(float(hp.raw["clip_qkv"]))


@register_architecture
def olmo() -> ArchitectureSpec:
    return ArchitectureSpec(model_type="olmo", hf_class="OlmoForCausalLM",
                            gguf=GGUFMapping(arch="OLMO", metadata=olmo_metadata, permute_qk=True))
