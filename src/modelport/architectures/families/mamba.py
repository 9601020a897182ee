"""Mamba, Falcon-Mamba and Mamba-2: pure state-space decoders, one mixer per layer and no attention.

llama.cpp stores the state decay as `A = -exp(A_log)` (rules.NegExp, whose inverse is exact to float32
rounding only), a depthwise conv1d kernel [d, 1, k] as [d, k], and Mamba-2's per-head A and D as
[h, 1] and its grouped RMSNorm as [n_groups, d / n_groups]. It runs them with a recurrent state, no KV
cache. Falcon-Mamba is Mamba with B, C and dt RMS-normalised (`ssm.dt_b_c_rms`). transformers runs all
three on CPU through its slow sequential scan.
"""
from ..gguf_mapping import GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import Grouped, NegExp, Squeeze, Unsqueeze
from ..tensors import Tensors, linear, norm, t

P = "backbone.layers.{L}.mixer"
INNER = "expand * hidden"           # the mixer's inner width (Mamba's config also states it as intermediate_size)
EMBED = (t("backbone.embeddings.weight", "vocab", "hidden"),)
HEAD = (*norm("backbone.norm_f"), t("lm_head.weight", "vocab", "hidden"))
TIED = {"lm_head.weight": "backbone.embeddings.weight"}
CONV_BIAS = "get('use_conv_bias', True)"
BIAS = "get('use_bias', False)"

# a state-space layer's metadata, as llama.cpp's converter writes it (no heads, no feed-forward; an
# "arbitrary" context length, since a recurrent state has none)
SSM_KEYS = {
    "{arch}.context_length": Key(2 ** 20),
    "{arch}.embedding_length": Key("hidden"),
    "{arch}.feed_forward_length": Key(0),
    "{arch}.attention.head_count": Key(0),
    "{arch}.block_count": Key("layers"),
    "{arch}.ssm.conv_kernel": Key("conv_kernel"),
    "{arch}.ssm.inner_size": Key(INNER),
    "{arch}.ssm.state_size": Key("state_size"),
    "{arch}.attention.layer_norm_rms_epsilon": Key("ln_eps", "f32"),
    "{arch}.vocab_size": Key("vocab"),
}
STATE_RULES = (NegExp(("A_log",)), Squeeze(("conv1d.weight",)))
# why layer-major verification runs these families whole (docs/verify.md)
MAMBA_STATE = "state-space (Mamba) layers carry state along the sequence (transformers' own cache object)"
NO_ONNX = ("torch.onnx cannot export transformers' state-space cache (a recurrent state, not a KV cache) through "
           "the decoder export")


def mamba_tensors(cls: str) -> Tensors:
    layer = (
        *norm("backbone.layers.{L}.norm"),
        t(f"{P}.A_log", INNER, "state_size"),
        t(f"{P}.D", INNER),
        t(f"{P}.conv1d.weight", INNER, 1, "conv_kernel"),
        t(f"{P}.conv1d.bias", INNER, when=CONV_BIAS),
        *linear(f"{P}.in_proj", f"2 * {INNER}", "hidden", BIAS),
        *linear(f"{P}.x_proj", "time_step_rank + 2 * state_size", INNER),
        *linear(f"{P}.dt_proj", INNER, "time_step_rank", True),
        *linear(f"{P}.out_proj", "hidden", INNER, BIAS),
    )
    return Tensors(EMBED, layer, HEAD, TIED, prefix="backbone", classes=(cls,))


def mamba_mapping(dt_b_c_rms: bool) -> GGUFMapping:
    return GGUFMapping(
        arch="MAMBA", rules=STATE_RULES,
        metadata={**SSM_KEYS, "{arch}.ssm.time_step_rank": Key("time_step_rank"),
                  "{arch}.ssm.dt_b_c_rms": Key(dt_b_c_rms, "bool")},
        requires={"expand == 2": "llama.cpp runs only an expansion factor of 2",
                  "not get('use_bias', False)": "llama.cpp's Mamba has no in_proj or out_proj bias"})


TINY = dict(hidden_size=64, num_hidden_layers=2, state_size=8, conv_kernel=4, expand=2, time_step_rank=8,
            layer_norm_epsilon=1e-5, max_position_embeddings=512)

MAMBA = register_architecture(ArchitectureSpec(
    model_type="mamba",
    tensors=mamba_tensors("MambaForCausalLM"),
    tie_default=True,
    gguf=mamba_mapping(dt_b_c_rms=False),
    no_onnx=NO_ONNX,
    recurrent=MAMBA_STATE,
    tiny=dict(TINY, tie_word_embeddings=True),
))
FALCON_MAMBA = register_architecture(ArchitectureSpec(
    model_type="falcon_mamba",
    tensors=mamba_tensors("FalconMambaForCausalLM"),
    tie_default=True,
    gguf=mamba_mapping(dt_b_c_rms=True),
    no_onnx=NO_ONNX,
    recurrent=MAMBA_STATE,
    note="llama.cpp normalises B, C and dt with layer_norm_epsilon, transformers with mixer_rms_eps",
    tiny=dict(TINY, tie_word_embeddings=True),
))


CONV_DIM = f"{INNER} + 2 * n_groups * state_size"
MAMBA2 = register_architecture(ArchitectureSpec(
    model_type="mamba2",
    tensors=Tensors(EMBED, (
        *norm("backbone.layers.{L}.norm"),
        t(f"{P}.dt_bias", "num_heads"),
        t(f"{P}.A_log", "num_heads"),
        t(f"{P}.D", "num_heads"),
        t(f"{P}.conv1d.weight", CONV_DIM, 1, "conv_kernel"),
        t(f"{P}.conv1d.bias", CONV_DIM, when=CONV_BIAS),
        *linear(f"{P}.in_proj", f"{INNER} + {CONV_DIM} + num_heads", "hidden", BIAS),
        *norm(f"{P}.norm", INNER),
        *linear(f"{P}.out_proj", "hidden", INNER, BIAS),
    ), HEAD, TIED, prefix="backbone", classes=("Mamba2ForCausalLM",)),
    gguf=GGUFMapping(
        arch="MAMBA2",
        rules=(*STATE_RULES, Unsqueeze(("A_log", ".D")), Grouped(("mixer.norm.weight",), "n_groups")),
        names={f"{P}.dt_bias": "blk.{L}.ssm_dt.bias"},
        metadata={**SSM_KEYS, "{arch}.ssm.inner_size": Key("expand * hidden"),
                  "{arch}.ssm.time_step_rank": Key("num_heads"), "{arch}.ssm.group_count": Key("n_groups")},
        requires={"get('head_dim') == expand * hidden // num_heads":
                      "llama.cpp's Mamba-2 heads split the inner size (expand x hidden) evenly",
                  "not get('use_bias', False)": "llama.cpp's Mamba-2 has no in_proj or out_proj bias"}),
    no_onnx=NO_ONNX,
    recurrent=MAMBA_STATE,
    tiny=dict(TINY, num_heads=8, head_dim=16, n_groups=2, state_size=16, tie_word_embeddings=False),
))
