"""Falcon-H1 (TII): every layer runs attention (NEOX rope) and a Mamba-2 mixer side by side on the same
normed input, adds both to the residual, then a SwiGLU; μP multipliers scale the embeddings, the
attention's input, keys and output, the mixer's input, its z/x/B/C/dt projections and output, the MLP's
gate and down projections, and the logits.

llama.cpp has no multipliers: its converter folds each into the weights it scales (rules.Scale, in
float32; in_proj is scaled slice by slice, so it is held whole). The inverse divides by the config's
multipliers, so GGUF -> HF with the source config gives the weights back within float32 rounding; a config
rebuilt from the metadata alone has every multiplier 1, with the folded weights: the same function.
The Mamba-2 tensors go through Mamba-2's rules (mamba.py); llama.cpp gates before the grouped norm.
llama.cpp does not clamp the time step by `time_step_limit`: the released configs' (0, inf) clamps nothing
(transformers 5 saves the infinity as {"__float__": "Infinity"}, which no spec expression can compare).
"""
from ..gguf_mapping import GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import Grouped, NegExp, Scale, Squeeze, Unsqueeze
from ..tensors import linear, norm, only, t
from .llama import TINY, attention, decoder, swiglu
from .mamba import MAMBA_STATE, NO_ONNX

P = "model.layers.{L}.mamba"
INNER = "(mamba_d_ssm if get('mamba_d_ssm') is not None else mamba_expand * hidden)"
GROUPS_STATE = "mamba_n_groups * mamba_d_state"
CONV_DIM = f"{INNER} + 2 * {GROUPS_STATE}"
NORM = "get('mamba_rms_norm', False)"
SSM = "(ssm_multipliers if get('ssm_multipliers') else [1.0, 1.0, 1.0, 1.0, 1.0])"
MLP = "(mlp_multipliers if get('mlp_multipliers') else [1.0, 1.0])"
ATTENTION_IN = "get('attention_in_multiplier', 1.0)"

LAYER = (
    *swiglu("model.layers.{L}.feed_forward"),
    t(f"{P}.dt_bias", "mamba_n_heads"), t(f"{P}.A_log", "mamba_n_heads"), t(f"{P}.D", "mamba_n_heads"),
    t(f"{P}.conv1d.weight", CONV_DIM, 1, "mamba_d_conv"),
    t(f"{P}.conv1d.bias", CONV_DIM, when="get('mamba_conv_bias', True)"),
    *linear(f"{P}.in_proj", f"2 * {INNER} + 2 * {GROUPS_STATE} + mamba_n_heads", "hidden",
            "get('mamba_proj_bias', False)"),
    *only(NORM, norm(f"{P}.norm", INNER)),
    *linear(f"{P}.out_proj", "hidden", INNER, "get('projectors_bias', False)"),
    *attention(),
    *norm("model.layers.{L}.input_layernorm"), *norm("model.layers.{L}.pre_ff_layernorm"),
)

# the multipliers, folded as llama.cpp's converter folds them (each output a weight's rows give, scaled)
MULTIPLIERS = (
    Scale(("embed_tokens.weight",), "get('embedding_multiplier', 1.0)"),
    Scale(("lm_head.weight",), "get('lm_head_multiplier', 1.0)"),
    Scale(("q_proj.weight", "v_proj.weight"), ATTENTION_IN),
    Scale(("k_proj.weight",), f"{ATTENTION_IN} * get('key_multiplier', 1.0)"),
    Scale(("o_proj.weight",), "get('attention_out_multiplier', 1.0)"),
    Scale(("mamba.out_proj.weight",), "get('ssm_out_multiplier', 1.0)"),
    Scale(("mamba.in_proj.weight",), f"[[part[0], get('ssm_in_multiplier', 1.0) * part[1]] for part in "
                                     f"[[{INNER}, {SSM}[0]], [{INNER}, {SSM}[1]], [{GROUPS_STATE}, {SSM}[2]], "
                                     f"[{GROUPS_STATE}, {SSM}[3]], [mamba_n_heads, {SSM}[4]]]]"),
    Scale(("gate_proj.weight", "gate_proj.bias"), f"{MLP}[0]"),
    Scale(("down_proj.weight", "down_proj.bias"), f"{MLP}[1]"),
)

SPEC = register_architecture(ArchitectureSpec(
    model_type="falcon_h1",
    tensors=decoder("FalconH1ForCausalLM", LAYER, head=(*norm("model.final_layernorm"), t("lm_head.weight", "vocab", "hidden"))),
    gguf=GGUFMapping(
        arch="FALCON_H1",
        rules=(*MULTIPLIERS, NegExp(("A_log",)), Squeeze(("conv1d.weight",)), Unsqueeze(("A_log", ".D")),
               Grouped(("mamba.norm.weight",), "mamba_n_groups")),
        names={f"{P}.dt_bias": "blk.{L}.ssm_dt.bias"},
        metadata={
            "{arch}.context_length": Key("ctx"),
            "{arch}.embedding_length": Key("hidden"),
            "{arch}.feed_forward_length": Key("ffn"),
            "{arch}.attention.head_count": Key("heads"),
            "{arch}.attention.head_count_kv": Key("kv_heads"),
            "{arch}.block_count": Key("layers"),
            "{arch}.ssm.conv_kernel": Key("mamba_d_conv"),
            "{arch}.ssm.inner_size": Key(INNER),
            "{arch}.ssm.state_size": Key("mamba_d_state"),
            "{arch}.ssm.time_step_rank": Key("mamba_n_heads"),
            # llama.cpp gates the scan's output before its grouped norm: so does the config read back
            "{arch}.ssm.group_count": Key("mamba_n_groups", inverse=(("mamba_n_groups", "value"),
                                                                     ("mamba_norm_before_gate", "False"))),
            "{arch}.attention.layer_norm_rms_epsilon": Key("rms_eps", "f32"),
            "{arch}.vocab_size": Key("vocab"),
            "{arch}.attention.key_length": Key("head_dim"),
            "{arch}.attention.value_length": Key("head_dim"),
            "{arch}.rope.freq_base": Key("rope_theta", "f32"),
            "{arch}.rope.dimension_count": Key("rot_dim"),
        },
        requires={
            "not (get('mamba_rms_norm', False) and get('mamba_norm_before_gate', True))":
                "llama.cpp gates the Mamba-2 output before its grouped norm (mamba_norm_before_gate false)",
            f"mamba_d_head * mamba_n_heads == {INNER}": "its Mamba-2 heads split the inner size evenly",
            "not get('mamba_proj_bias', False)": "llama.cpp's Falcon-H1 has no in_proj bias",
            "not get('projectors_bias', False)": "llama.cpp's Falcon-H1 has no Mamba out_proj bias",
            "not get('attention_bias', False)": "llama.cpp's converter would scale the Q/K/V biases by the "
                                                "attention's input multiplier, which acts on the input only",
            "rope_type is None": "llama.cpp's converter writes no rope scaling for Falcon-H1",
            "not tie or get('embedding_multiplier', 1.0) == get('lm_head_multiplier', 1.0)":
                "tied embeddings are one tensor, which one multiplier scales",
        }),
    no_onnx=NO_ONNX,
    recurrent=MAMBA_STATE,
    tiny=dict(TINY, head_dim=16, mamba_d_ssm=128, mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2,
              mamba_d_state=16, mamba_d_conv=4, mamba_rms_norm=True, mamba_norm_before_gate=False,
              embedding_multiplier=2.5, lm_head_multiplier=0.3, key_multiplier=0.7, attention_in_multiplier=1.3,
              attention_out_multiplier=0.9, ssm_in_multiplier=1.25, ssm_out_multiplier=0.6,
              mlp_multipliers=[0.88, 0.59], ssm_multipliers=[0.5, 1.5, 0.8, 1.2, 0.7], tie_word_embeddings=False),
))
