"""Issue 28 benchmark: hybrid models at full width, one or two layers of each kind, converted to GGUF.

    cd bench && ../.venv/bin/python bench_hybrid_scale.py [--quant q8_0]

Nemotron-H-8B's shapes (hidden 4096, a Mamba-2 mixer of 128 heads x 64, attention of 32 heads, a
21504-wide ReLU² MLP, vocab 131072) with one Mamba, one attention and one MLP layer; and Granite 4.0
H Tiny's (hidden 1536, 64 experts of 512 and a shared expert of 1024, Mamba-2 of 48 heads x 64, vocab
100352) with two Mamba layers and one attention layer; Qwen3-Next-80B-A3B's (hidden 2048, 512 experts of 512
and a shared expert, a gated delta net of 16 key x 32 value heads of 128, vocab 151936) with one
linear-attention and one full-attention layer. Each is one `modelport convert` (peak RSS by
GNU time): the experts stream as every MoE family's do, so peak memory stays a working set.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import MODELPORT, folder_bytes, measure, write_hf_model

OUT = Path(__file__).resolve().parent / "out" / "hybrid-scale"
MODELS = {
    "nemotron_h": dict(model_type="nemotron_h", architectures=["NemotronHForCausalLM"], hidden_size=4096,
                       intermediate_size=21504, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                       layers_block_type=["mamba", "attention", "mlp"], mamba_num_heads=128, mamba_head_dim=64,
                       n_groups=8, ssm_state_size=128, conv_kernel=4, layer_norm_epsilon=1e-5, vocab_size=131072,
                       max_position_embeddings=8192, tie_word_embeddings=False),
    "granitemoehybrid": dict(model_type="granitemoehybrid", architectures=["GraniteMoeHybridForCausalLM"],
                             hidden_size=1536, intermediate_size=512, shared_intermediate_size=1024,
                             num_local_experts=64, num_experts_per_tok=6, num_attention_heads=12,
                             num_key_value_heads=4, num_hidden_layers=3, layer_types=["mamba", "attention", "mamba"],
                             mamba_n_heads=48,
                             mamba_d_head=64, mamba_n_groups=1, mamba_d_state=128, mamba_d_conv=4, mamba_expand=2,
                             rms_norm_eps=1e-5, vocab_size=100352, max_position_embeddings=131072,
                             attention_multiplier=0.0078125, embedding_multiplier=12.0, residual_multiplier=0.22,
                             logits_scaling=6.0, position_embedding_type=None, tie_word_embeddings=True),
    "qwen3_next": dict(model_type="qwen3_next", architectures=["Qwen3NextForCausalLM"], hidden_size=2048,
                       intermediate_size=5120, moe_intermediate_size=512, shared_expert_intermediate_size=512,
                       num_experts=512, num_experts_per_tok=10, norm_topk_prob=True, num_attention_heads=16,
                       num_key_value_heads=2, head_dim=256, num_hidden_layers=2,
                       layer_types=["linear_attention", "full_attention"], linear_num_key_heads=16,
                       linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128,
                       linear_conv_kernel_dim=4, rms_norm_eps=1e-6, vocab_size=151936, max_position_embeddings=262144,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
                       tie_word_embeddings=False),
}


def make_model(name: str) -> Path:
    path = OUT / name
    if not (path / "config.json").exists():
        write_hf_model(path, MODELS[name], shard_bytes=2_000_000_000)
    if not (path / "tokenizer.json").exists():
        from modelport.samples import train_tokenizer
        train_tokenizer("bpe").save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quant", default="q8_0")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    for name in args.models:
        model = make_model(name)
        out = OUT / f"{name}-{args.quant}.gguf"
        run = measure([*MODELPORT, "convert", str(model), str(out), "--quant", args.quant, "--overwrite"])
        print(f"{name}: {folder_bytes(model) / 1e9:.2f} GB bf16 -> {args.quant} {out.stat().st_size / 1e9:.2f} GB "
              f"in {run.seconds:.1f} s, peak RSS {run.peak_rss_mb:.0f} MB")
        out.unlink()


if __name__ == "__main__":
    main()
