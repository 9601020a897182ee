"""An HF config rebuilt from a GGUF's metadata, for every family in the registry.

Each family's GGUF mapping says which metadata key holds which config value (its Key table), so the
table read backwards gives the config: a key whose value is a plain name (`hidden`, `sliding_window`,
`get('first_k_dense_replace', 0)`) names the config key it came from, spelled as the family spells it.
Rope settings become `rope_parameters`. Switches the metadata does not hold (`attention_bias`,
`use_qk_norm`, ...) are read off the tensors: each candidate setting is tried until the family's
tensors, under their GGUF names and shapes, are exactly the file's. A rebuilt config is then checked
forwards: written again, it must give every metadata value the file has. A family sharing llama.cpp's
arch with others (llama, mistral, mixtral) is the first whose config passes both checks.
"""
from __future__ import annotations

import ast
import itertools
from typing import Any

import gguf
import numpy as np

from ...architectures import registered
from ...architectures.expected import expected_tensors
from ...architectures.expressions import evaluate
from ...architectures.hparams import VARIABLES, hparams
from ...architectures.registry import ArchitectureSpec
from ...core.config_check import check_config
from ...core.errors import ModelFileNotFoundError
from .header import GGUFHeader

ROPE = {"rope_type": "rope_type", "rope_factor": "factor", "rope_orig_ctx": "original_max_position_embeddings",
        "rope_ext_factor": "extrapolation_factor", "rope_attn_factor": "attention_factor",
        "rope_beta_fast": "beta_fast", "rope_beta_slow": "beta_slow", "rope_mscale_all_dim": "mscale_all_dim"}
TOKEN_IDS = {"bos_token_id": "tokenizer.ggml.bos_token_id", "eos_token_id": "tokenizer.ggml.eos_token_id",
             "pad_token_id": "tokenizer.ggml.padding_token_id"}
MAX_SWITCHES = 6             # 2^6 settings tried at most


class Mismatch(Exception):
    """This family's config cannot say what the file holds."""


def arch_name(spec: ArchitectureSpec) -> str:
    return gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[spec.gguf.arch]]


def rebuilt_config(header: GGUFHeader) -> dict:
    """The config of the family whose config the file's metadata and tensors both describe (of several, the
    one whose keys leave fewest of the file's unexplained, then by name and registry order); an error
    naming why each candidate failed when none fits."""
    arch = header.architecture
    candidates = sorted((s for family in registered() for s in family.with_variants() if s.gguf is not None
                         and s.tensors is not None and not callable(s.gguf.metadata) and arch_name(s) == arch),
                        key=lambda s: s.model_type.replace("_", "") != arch.replace("-", ""))
    if not candidates:
        raise ModelFileNotFoundError(f"no config.json beside this {arch} GGUF, and no family modelport knows runs as "
                                     f"{arch!r}; pass --base-model DIR with the HF config", header.path)
    failures, fits = [], []
    for spec in candidates:
        try:
            fits.append((_unexplained(spec, header), _config(spec, header)))
        except Mismatch as exc:
            failures.append(f"{spec.model_type}: {exc}")
    if fits:        # of the families sharing the arch, the one whose keys say most of what the file says
        return min(fits, key=lambda fit: fit[0])[1]
    raise ModelFileNotFoundError(f"no config.json beside this {arch} GGUF, and its metadata and tensors fit no family "
                                 f"({'; '.join(failures)[:400]}); pass --base-model DIR with the HF config", header.path)


def _unexplained(spec: ArchitectureSpec, header: GGUFHeader) -> int:
    """How many of the file's `{arch}.` keys the family's metadata table does not have (OLMo 3's sliding
    window, on a file OLMo 2 would also fit)."""
    arch = header.architecture
    known = {key.format(arch=arch) for key in spec.gguf.metadata}
    return sum(key.startswith(f"{arch}.") and key not in known for key in header.fields)


def _config(spec: ArchitectureSpec, header: GGUFHeader) -> dict:
    arch = header.architecture
    if any(t.name == "rope_freqs.weight" for t in header.tensors):
        raise Mismatch("the file holds llama3-style rope factors (rope_freqs), not the rope_scaling that made them")
    config: dict[str, Any] = {"model_type": spec.model_type,
                              "architectures": [spec.tensors.classes[0] if spec.tensors.classes else spec.hf_class]}
    rope: dict[str, Any] = {}
    sums: list[tuple[str, str, str, Any]] = []
    inverses: list[tuple[str, str, Any]] = []
    for key, entry in spec.gguf.metadata.items():
        value = header.get(key.format(arch=arch))
        if value is not None and entry.inverse:
            inverses += [(*pair, value) for pair in entry.inverse]
            continue
        name = _source(entry.value)
        if value is not None and name is None and (parts := _operands(entry.value)):
            sums.append((*parts, value))
        if value is None or name is None:
            continue
        if isinstance(value, list):
            raise Mismatch(f"{key.format(arch=arch)} varies by layer, which no single config value says")
        if entry.type == "f32":             # stored as float32: the shortest decimal that is that float32
            value = float(str(np.float32(value)))
        if name in ROPE:
            rope[ROPE[name]] = value
        elif name in ("rope_theta", "rot_dim", "rope_theta_swa"):
            rope[name] = value
        else:
            config[_spelling(spec, name)] = value
    for op, a, b, total in sums:        # "a + b" or "a * b" with one of them known gives the other
        a, b = _spelling(spec, a), _spelling(spec, b)
        if (a in config) != (b in config) and isinstance(total, int):
            known, unknown = (a, b) if a in config else (b, a)
            config[unknown] = total - config[known] if op == "+" else total // config[known]
    names = [t.name for t in header.tensors]      # where a layer kind shows only in its tensors (Jamba's routers)
    for key, expression, value in inverses:     # read back in the table's order, each seeing what is known
        try:
            config[key] = evaluate(expression, {**config, "value": value, "tensors": names})
        except (IndexError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:   # a table that lies
            raise Mismatch(f"{key} cannot be read back from {value!r} ({type(exc).__name__})") from None
    vocab = header.get("tokenizer.ggml.tokens")
    config.setdefault(_spelling(spec, "vocab"), header.get(f"{arch}.vocab_size") or (len(vocab) if vocab else None))
    # stated even when absent: a config class's own default (Glm4's pad 151329) may lie outside this vocabulary
    config.update({key: header.get(gguf_key) for key, gguf_key in TOKEN_IDS.items()})
    config["tie_word_embeddings"] = not any(t.name == "output.weight" for t in header.tensors)
    _set_rope(spec, config, rope)
    _assume(spec, config)
    _drop_defaults(spec, config)
    check_config({k: v for k, v in config.items() if not isinstance(v, dict)}, header.path)
    return _with_switches(spec, config, header)


def _assume(spec: ArchitectureSpec, config: dict) -> None:
    """What llama.cpp hard-codes for the arch (the mapping's `requires`), where the metadata is silent:
    `get('k')` or `not get('k')` gives a switch, `get('k') == expr` a value (Gemma 2's query scaling)."""
    for expression in spec.gguf.requires:
        node = ast.parse(expression, mode="eval").body
        negated = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        key = _key(node.operand if negated else node)
        if key is not None and key not in config:
            config[key] = not negated
            continue
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
            key = _key(node.left)
            if key is not None and key not in config:
                try:
                    config[key] = hparams(config, spec.tie_default).eval(ast.unparse(node.comparators[0]))
                except Exception:  # an expression over what this config lacks: leave the class default
                    continue


def _key(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "get" and node.args \
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return node.id if isinstance(node, ast.Name) and node.id not in VARIABLES else None


def _drop_defaults(spec: ArchitectureSpec, config: dict) -> None:
    """Leave out a quantity the config would compute to the same value anyway (head_dim = hidden // heads),
    as the family's own configs do; some config classes refuse it (Falcon's head_dim is a property)."""
    for name, (keys, default) in VARIABLES.items():
        key = _spelling(spec, name)
        if default is None or key not in config or key in spec.tiny:
            continue
        try:
            computed = hparams({k: v for k, v in config.items() if k != key}, spec.tie_default)[name]
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
        if computed == config[key]:
            del config[key]


def _parsed(expression: Any) -> ast.expr | None:
    """A Key value's expression tree; None for a constant or what does not parse."""
    if not isinstance(expression, str):
        return None
    try:
        return ast.parse(expression, mode="eval").body
    except SyntaxError:
        return None


def _operands(expression: Any) -> tuple[str, str, str] | None:
    """("+" or "*", a, b) for a Key whose value is `a + b` or `a * b` of two names (Mamba-2's inner size is
    `expand * hidden`)."""
    node = _parsed(expression)
    ops = {ast.Add: "+", ast.Mult: "*"}
    if isinstance(node, ast.BinOp) and type(node.op) in ops and isinstance(node.left, ast.Name) \
            and isinstance(node.right, ast.Name):
        return ops[type(node.op)], node.left.id, node.right.id
    return None


def _source(expression: Any) -> str | None:
    """The one name a Key's value reads (`hidden`, `get('x', 0)`), or None for anything computed."""
    node = _parsed(expression)
    if isinstance(node, ast.IfExp) and isinstance(node.body, ast.Name):     # "x if x is not None else default"
        node = node.body
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "get" and node.args \
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def _spelling(spec: ArchitectureSpec, name: str) -> str:
    """The config key a quantity goes under in this family: the spelling its tiny config uses, else the
    first VARIABLES gives (a name that is no VARIABLE is a config key already)."""
    if name not in VARIABLES:
        return name
    keys = VARIABLES[name][0]
    return next((k for k in keys if k in spec.tiny), keys[0])


def _set_rope(spec: ArchitectureSpec, config: dict, rope: dict) -> None:
    """`rope_parameters` as transformers 5 writes them (per layer type when sliding layers have their own
    base), and a partial rotary factor where the rotated dimensions are fewer than a head's."""
    rot_dim, swa_theta = rope.pop("rot_dim", None), rope.pop("rope_theta_swa", None)
    params = {"rope_type": "default", "rope_theta": 10000.0, **rope}
    if params["rope_type"] == "none":      # llama.cpp's word for unscaled (its converter writes it): transformers' default
        params = {"rope_type": "default", "rope_theta": params["rope_theta"]}
    hidden, heads = config.get(_spelling(spec, "hidden")), config.get(_spelling(spec, "heads"))
    head_dim = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    if rot_dim is not None and head_dim and rot_dim != head_dim:
        key = next((k for k in VARIABLES["partial_rotary"][0] if k in spec.tiny), None)
        if key is not None:
            config[key] = rot_dim / head_dim
        else:
            params["partial_rotary_factor"] = rot_dim / head_dim
    if swa_theta is not None:
        config["rope_parameters"] = {"full_attention": params,
                                     "sliding_attention": {"rope_type": "default", "rope_theta": swa_theta}}
    else:
        config["rope_parameters"] = params


def _switches(spec: ArchitectureSpec, config: dict) -> list[str]:
    """Config keys the tensor templates' conditions read that the metadata did not give."""
    names: set[str] = set()
    for template in (*spec.tensors.pre, *spec.tensors.layer, *spec.tensors.post):
        for expression in (template.when, *template.shape):
            if isinstance(expression, str):
                for node in ast.walk(ast.parse(expression, mode="eval")):
                    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "get" and node.args \
                            and isinstance(node.args[0], ast.Constant):
                        names.add(node.args[0].value)
    return sorted(n for n in names if n not in config and isinstance(spec.tiny.get(n, False), bool))


def _with_switches(spec: ArchitectureSpec, config: dict, header: GGUFHeader) -> dict:
    """The config with each unknown switch set so the family's tensors are exactly the file's. A tensor
    llama.cpp has no name for tells nothing about the config: it is left to the reader, which refuses
    it unless --allow-unused."""
    have = {t.name: t.shape for t in header.tensors}
    known = _llama_cpp_names(header.architecture, int(config.get("num_hidden_layers") or 0))
    unnamed = {n for n in have if n.rsplit(".", 1)[0] not in known}
    switches = _switches(spec, config)[:MAX_SWITCHES]
    reason = "no setting of its switches gives the file's tensors"
    for values in itertools.product((False, True), repeat=len(switches)):
        trial = {**config, **dict(zip(switches, values))}
        try:
            found = _gguf_tensors(spec, trial)
        except Exception as exc:  # a setting this family's templates cannot evaluate
            reason = f"{type(exc).__name__}: {exc}"
            continue
        relevant = {n: shape for n, shape in have.items() if n in found or n not in unnamed}
        if found == relevant:
            _check_forwards(spec, trial, header)
            return trial
        extra, absent = sorted(set(found) - set(relevant)), sorted(set(relevant) - set(found))
        differ = sorted(n for n in found if n in have and found[n] != have[n])
        reason = (f"its tensors would include {extra[0]}" if extra else
                  f"the file has {absent[0]}, which it has no place for" if absent else
                  f"its {differ[0]} would be {list(found[differ[0]])}, the file's is {list(have[differ[0]])}")
    raise Mismatch(reason)


def _llama_cpp_names(arch: str, n_layer: int) -> set[str]:
    """Every tensor name (without .weight/.bias) llama.cpp's tables give this architecture."""
    arch_id = next((a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch), None)
    if arch_id is None:
        return set()
    return {gguf.TENSOR_NAMES[t].format(bid=b) for t in gguf.MODEL_TENSORS.get(arch_id, ())
            for b in range(max(n_layer, 1))}


def _gguf_tensors(spec: ArchitectureSpec, config: dict) -> dict[str, tuple[int, ...]]:
    """Every GGUF tensor name and shape a model of this config is written as."""
    hp = hparams(config, spec.tie_default)
    expected = expected_tensors(spec, config)
    out: dict[str, tuple[int, ...]] = {}
    stacked: dict[str, int] = {}
    for name, shape in expected.shapes.items():
        if name in expected.tied or name.endswith(spec.gguf.skip):
            continue
        for target in spec.gguf.targets(name, hp):
            if target.expert is None:
                out[target.name] = tuple(target.chain.shape(shape))
            else:
                stacked[target.name] = stacked.get(target.name, 0) + 1
                out[target.name] = (stacked[target.name], *target.chain.shape(shape))
    for name, tensor in (spec.gguf.extra_tensors(hp) if spec.gguf.extra_tensors else {}).items():
        out[name] = tuple(tensor.shape)
    return out


def _check_forwards(spec: ArchitectureSpec, config: dict, header: GGUFHeader) -> None:
    for key, value in spec.gguf.metadata_values(hparams(config, spec.tie_default)).items():
        stated = header.get(key)
        if stated is not None and not _same(stated, value):
            raise Mismatch(f"its config would write {key} = {value!r}, the file says {stated!r}")


def _same(a: Any, b: Any) -> bool:
    """Equal, floats within float32 storage (a per-layer list entry by entry; an infinity is itself)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if a == b:
        return True
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
    return a == b
